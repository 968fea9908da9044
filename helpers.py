"""What both tiers share besides the queue protocol (see protocol.py): ids, names, logging."""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import re
import socket
import uuid

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_JOB_ID = re.compile(r"[0-9a-f]{32}")


def new_request_id() -> str:
    """A fresh id for one request, safe to use in Redis keys and log lines."""
    return uuid.uuid4().hex


def is_valid_job_id(value: str) -> bool:
    """Whether `value` has the form of the ids `new_request_id` makes (for GET /result/<id>)."""
    return _JOB_ID.fullmatch(value) is not None


def is_valid_request_id(value: str) -> bool:
    """Whether a client-supplied X-Request-ID can be trusted in keys and logs."""
    return _REQUEST_ID.fullmatch(value) is not None


def default_server_name() -> str:
    """`host:pid`, unique enough to name one model server among several on shared Redis."""
    return f"{socket.gethostname()}:{os.getpid()}"


def configure_logging(level: str) -> None:
    """One log format for both tiers: time, level, logger, message."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc's HEAP_MAX_SIZE / 2 on 64-bit


def keep_freed_memory(block_bytes: int) -> bool:
    """Let glibc keep freed blocks of up to `block_bytes` (at most 32 MiB, glibc's ceiling) for
    reuse instead of returning them to the kernel, so a per-request buffer does not cost fresh
    page faults and zeroed pages every time (see settings MALLOC_KEEP_BYTES). Larger blocks (a
    big photo's decode) still come from mmap and go back on free, and a heap is trimmed once more
    than 8 blocks lie free at its top, so what a process keeps stays bounded. False where there
    is no glibc, or `block_bytes` is 0."""
    if block_bytes <= 0:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    block = min(int(block_bytes), _MMAP_THRESHOLD_MAX)
    return all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, block), (_M_TRIM_THRESHOLD, 8 * block), (_M_TOP_PAD, 4 * block)))
