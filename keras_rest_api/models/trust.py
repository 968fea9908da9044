"""Whether a folder or file may hold models this process loads: who owns it, who may write it.

A model file is run, in effect (Keras builds what its config declares), so only this process's
user and root may have written what we load: the web tier runs as another user (Apache's
www-data), and a model file it could plant would be loaded by the model server. Used for the
converted-model cache (models.efficientnet_lite0) and the model repository (models.repository).
"""
from __future__ import annotations

import os
import stat

__all__ = ["unsafe_dir", "unsafe_file", "unsafe_linked_file"]


def _trusted_owner(st: os.stat_result) -> bool:
    return st.st_uid in (0, os.geteuid())


def _writable_by_others(st: os.stat_result) -> bool:
    return bool(st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def _untrusted(st: os.stat_result) -> str | None:
    """Why a file or folder with this status may not be trusted (its owner, its mode), or None."""
    if not _trusted_owner(st):
        return f"it belongs to uid {st.st_uid}, not to this user ({os.geteuid()}) or root"
    if _writable_by_others(st):
        return f"its mode {stat.S_IMODE(st.st_mode):04o} lets group or others write it"
    return None


def unsafe_dir(directory: str) -> str | None:
    """Why the existing `directory` may not hold models we load, or None when it may.

    It and every directory above it must belong to root or to this process's user and be
    writable by nobody else; above it, a sticky directory such as /tmp is fine, since nobody
    else may rename or replace what we own in it. (POSIX modes only; ACLs are not read.)
    """
    real = os.path.realpath(directory)
    try:
        st = os.stat(real)
    except OSError as exc:
        return f"cannot inspect it ({exc.strerror})"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    problem = _untrusted(st)
    if problem:
        return problem
    parent = os.path.dirname(real)
    while True:
        try:
            st = os.stat(parent)
        except OSError as exc:
            return f"cannot inspect {parent} ({exc.strerror})"
        if not _trusted_owner(st):
            return f"the directory above it, {parent}, belongs to uid {st.st_uid}"
        if _writable_by_others(st) and not st.st_mode & stat.S_ISVTX:
            return (f"the directory above it, {parent}, has mode {stat.S_IMODE(st.st_mode):04o}: "
                    "others could replace the cache directory")
        if parent == os.path.dirname(parent):
            return None
        parent = os.path.dirname(parent)


def unsafe_file(path: str) -> str | None:
    """Why the file at `path` (a cached model: not a symbolic link) may not be loaded, or None when it may."""
    st = os.lstat(path)  # a symbolic link could point anywhere, so it is not followed
    if not stat.S_ISREG(st.st_mode):
        return "it is not a regular file (a symbolic link?)"
    return _untrusted(st)


def unsafe_linked_file(path: str) -> str | None:
    """Why the file at `path` may not be loaded, or None: like unsafe_file, but a symbolic link
    (as a mounted configuration volume makes) is followed, and the file it leads to and every
    folder above that must pass too."""
    real = os.path.realpath(path)
    problem = unsafe_dir(os.path.dirname(real))
    if problem:
        return f"{os.path.dirname(real)}: {problem}"
    try:
        problem = unsafe_file(real)
    except OSError as exc:
        return f"cannot inspect it ({exc.strerror})"
    return f"{real}: {problem}" if problem and real != os.path.abspath(path) else problem
