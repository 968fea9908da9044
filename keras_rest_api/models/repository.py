"""The model repository: models as folders that declare their own contract, laid out as Triton's.

    <MODEL_REPOSITORY>/
      <model name>/
        config.json          what the model expects (input, preprocessing, labels, batching, ...)
        labels.txt           one class name per line, in class-index order (any name config says)
        1/model.keras        version 1, saved with model.save("model.keras")
        2/model.keras        version 2; versions are decimal folder names compared as numbers

A built-in model ("source": "builtin:efficientnet_lite0") takes its weights from its package;
its version folders need no model file (a version folder that holds a model.keras overrides
the built-in weights for that version, e.g. a fine-tuned copy). MODEL_REPOSITORY left empty
means the repository shipped with the package, keras_rest_api/model_repository/.

config.json's fields are described and parsed in models.config; loading one version is
models.loading's (this module imports it, never the reverse). Every problem is a
`ModelConfigError` (a `ModelLoadError`) that names the file and the fix.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Any, Mapping

from keras_rest_api.models.base import LoadedModel, ModelLoadError
from keras_rest_api.models.config import (CONFIG_FILE, MODEL_FILE, SHIPPED_REPOSITORY, ModelConfig, ModelConfigError,
                                          VersionPolicy, model_folder, parse_config, scan_models, shipped_config)
from keras_rest_api.models.loading import load_version
from keras_rest_api.models.trust import unsafe_dir, unsafe_linked_file
from keras_rest_api.queue.records import is_valid_model_name, is_valid_version

# The names of models.config re-exported: they were defined here, and callers import them from here.
__all__ = ["ModelRepository", "open_repository", "CONFIG_FILE", "MODEL_FILE", "SHIPPED_REPOSITORY", "ModelConfig",
           "ModelConfigError", "VersionPolicy", "parse_config", "shipped_config"]

log = logging.getLogger(__name__)

_TRUST_FIX = ("Only this user or root may be able to write the model repository, its folders and files, and the "
              "folders above it (chown them to this user or root; chmod go-w).")
# Files that show someone saved a model in a format this server does not read.
_OTHER_FORMATS = (".h5", ".hdf5", ".pb", ".onnx", ".pt", ".pth", ".tflite", ".savedmodel", ".keras")


# --- the repository -------------------------------------------------------------------------
class ModelRepository:
    """The models under one folder: their configs, their versions, and loading one version."""

    def __init__(self, root: str, settings: Mapping[str, Any]) -> None:
        self.root = root
        self.settings = dict(settings)
        self._configs: dict[str, tuple[tuple[int, int], ModelConfig]] = {}
        self._reported: set[tuple[str, str, str]] = set()
        # Versions whose load failed, with the files they failed with: passed over until those change.
        self._failed: dict[tuple[str, str], tuple[tuple[Any, ...], str]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ModelRepository({self.root!r})"

    def model_names(self) -> list[str]:
        """Every model folder (one holding a config.json), sorted by name."""
        names, others = scan_models(self.root)
        for entry, problem in others:
            self._report(entry, "", problem)
        return names

    def folder(self, name: str) -> str:
        if is_valid_model_name(name) and not os.path.isdir(os.path.join(self.root, name)):
            self.model_names()  # a missing model: first report the folders there that are not models (once)
        return model_folder(self.root, name)

    def config(self, name: str) -> ModelConfig:
        """The parsed, validated config.json of model `name` (re-read when the file changes)."""
        path = os.path.join(self.folder(name), CONFIG_FILE)
        try:
            stat = os.stat(path)
            stamp = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            stamp = (0, -1)
        with self._lock:
            cached = self._configs.get(name)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        parsed = parse_config(path, name, self.settings)
        with self._lock:
            self._configs[name] = (stamp, parsed)
        return parsed

    def versions(self, name: str) -> list[str]:
        """The version folders present, ascending as numbers ("10" after "9")."""
        folder = self.folder(name)
        found = [e for e in os.listdir(folder) if is_valid_version(e) and os.path.isdir(os.path.join(folder, e))]
        return sorted(found, key=lambda v: (int(v), v))

    def version_problem(self, name: str, version: str) -> str:
        """Why `version` of `name` cannot be served ("" if nothing is known to be wrong).

        What is visible on disk (no model file), or the error its last load raised, as long as
        the files it was loaded from (config, labels, model) have not changed since.
        """
        config = self.config(name)
        folder = os.path.join(config.folder, version)
        if not os.path.isdir(folder):
            return f"{folder}: no such version folder"
        with self._lock:
            failed = self._failed.get((name, version))
        if failed is not None:
            if failed[0] == self._files_stamp(config.folder, folder):
                return failed[1]
            with self._lock:
                self._failed.pop((name, version), None)
        model_file = os.path.join(folder, MODEL_FILE)
        if os.path.isfile(model_file):
            if os.path.getsize(model_file) == 0:
                return f"{model_file}: empty file; save the model there with model.save({MODEL_FILE!r})"
            return ""
        if config.builtin:
            return ""
        others = sorted(e for e in os.listdir(folder) if e.lower().endswith(_OTHER_FORMATS))
        hint = f" (found {', '.join(others)}: re-save it with model.save({MODEL_FILE!r}))" if others else ""
        return (f"{folder}: version folder has no {MODEL_FILE}{hint}; save the model there with "
                f"model.save({os.path.join(folder, MODEL_FILE)!r}), or remove the folder")

    def versions_to_serve(self, name: str) -> list[str]:
        """The versions the model's policy chooses among those that look servable, ascending.

        A version folder with a visible problem (no model file) is logged and passed over, so
        it never displaces a good older version under {"latest": N}. Problems only loading can
        show (a damaged file, an input shape that does not match) surface from `load`, which
        raises; from then on this version is passed over too, until its files change.
        """
        config = self.config(name)
        usable = []
        for version in self.versions(name):
            problem = self.version_problem(name, version)
            if problem:
                self._report(name, version, problem)
            else:
                usable.append(version)
        chosen = config.version_policy.choose(usable)
        if config.version_policy.kind == "specific":
            for missing in sorted(set(config.version_policy.specific) - set(chosen)):
                self._report(name, missing, f"{config.config_file}: version_policy lists version {missing}, "
                                            "which is absent or unusable; it is not served")
        return chosen

    def problems(self) -> list[str]:
        """Every problem visible without loading a model (for a start-up check), one line each."""
        found = []
        for name in self.model_names():
            try:
                self.config(name)
                versions = self.versions(name)
            except ModelConfigError as exc:
                found.append(str(exc))
                continue
            if not versions:
                found.append(f"{os.path.join(self.root, name)}: no version folder; add one named 1/")
            found.extend(p for p in (self.version_problem(name, v) for v in versions) if p)
        return found

    def load(self, name: str, version: str) -> LoadedModel:
        """Load `version` of model `name`: a LoadedModel, or a ModelLoadError naming file and fix."""
        config = self.config(name)
        if not is_valid_version(version):
            raise ModelConfigError(f"{version!r} is not a version (a folder name of decimal digits).")
        problem = self.version_problem(name, version)
        if problem:
            raise ModelConfigError(problem + ".")
        stamp = self._files_stamp(config.folder, os.path.join(config.folder, version))
        untrusted = self._untrusted(config, version)
        if untrusted:
            raise ModelConfigError(untrusted)
        try:
            return load_version(config, version, self.settings)
        except ModelLoadError as exc:
            # Remembered, so versions_to_serve passes over this version (a good older one keeps
            # serving) until someone changes its files.
            with self._lock:
                self._failed[(name, version)] = (stamp, f"{exc} (load failed; fix the files to retry)")
            raise

    @staticmethod
    def _untrusted(config: ModelConfig, version: str) -> str:
        """Why the files `version` is loaded from may have been written by another user ("" if not).

        The same rule as the converted-model cache's (models.trust): what Keras builds from is,
        in effect, run, so only this user or root may be able to write the model's folders and
        files (the repository's root and the folders above it are checked when it is opened).
        """
        folder = os.path.join(config.folder, version)
        for directory in (config.folder, folder):
            problem = unsafe_dir(directory)
            if problem:
                return f"{directory}: {problem}. Not loading {config.name} version {version}. {_TRUST_FIX}"
        for path in (config.config_file, os.path.join(folder, MODEL_FILE)):
            if os.path.lexists(path):
                problem = unsafe_linked_file(path)
                if problem:
                    return f"{path}: {problem}. Not loading {config.name} version {version}. {_TRUST_FIX}"
        return ""

    @staticmethod
    def _files_stamp(*folders: str) -> tuple[Any, ...]:
        """Name, size and mtime of every file directly in `folders`: changes when any is edited."""
        stamp = []
        for folder in folders:
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        if entry.is_file():
                            info = entry.stat()
                            stamp.append((entry.path, info.st_size, info.st_mtime_ns))
            except OSError:
                stamp.append((folder, -1, 0))
        return tuple(sorted(stamp))

    def _report(self, name: str, version: str, problem: str) -> None:
        # Polled repeatedly by the model server: say each problem once, not once per poll.
        key = (name, version, problem)
        with self._lock:
            if key in self._reported:
                return
            self._reported.add(key)
        log.error("model repository: %s", problem)


def open_repository(config: Mapping[str, Any]) -> ModelRepository:
    """The repository at config["MODEL_REPOSITORY"] (default, when empty: the shipped one, SHIPPED_REPOSITORY)."""
    root = os.path.abspath(os.path.expanduser(str(config.get("MODEL_REPOSITORY") or SHIPPED_REPOSITORY)))
    if not os.path.isdir(root):
        raise ModelConfigError(f"MODEL_REPOSITORY={root!r} is not a folder. Point it at a folder holding one "
                               "folder per model (<name>/config.json, <name>/1/model.keras).")
    problem = unsafe_dir(root)
    if problem:
        raise ModelConfigError(f"MODEL_REPOSITORY={root!r}: {problem}. {_TRUST_FIX}")
    return ModelRepository(root, config)
