"""Read a PyTorch state dict saved in the legacy (pre-1.6, non-zip) format, without torch.

The layout is: pickled magic number, pickled protocol version, pickled system info, the
pickled state dict (whose tensors name their storages through `persistent_load`), a pickled
list of storage keys, then every storage in that order as an int64 element count followed by
its raw little-endian bytes. Only the handful of globals such a file needs may be unpickled,
so a hostile file cannot run code.
"""
from __future__ import annotations

import logging
import os
import pickle
import struct
from dataclasses import dataclass
from typing import IO, Any, Callable

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["TorchFileError", "load_legacy_state_dict"]

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
ZIP_SIGNATURE = b"PK\x03\x04"

# Storage class -> NumPy dtype (little-endian, as every legacy file we accept says it is).
STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class TorchFileError(ValueError):
    """The file is not a readable legacy PyTorch state dict; the message says why."""


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return STORAGE_DTYPES[self.name]


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage: _StorageRef, offset: int, size: tuple, stride: tuple, *_: Any) -> _TensorRef:
    # Both _rebuild_tensor and _rebuild_tensor_v2 start with these four; the rest (grad flag,
    # hooks, metadata) means nothing to an inference-only copy.
    return _TensorRef(storage, int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data: _TensorRef, *_: Any) -> _TensorRef:
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles the state dict with placeholders for storages whose bytes come later."""

    def __init__(self, file: IO[bytes], path: str) -> None:
        super().__init__(file)
        self.path = path
        self.storages: dict[str, _StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            import collections

            return collections.OrderedDict
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        rebuild = _ALLOWED_GLOBALS.get((module, name))
        if rebuild is None:
            raise TorchFileError(
                f"{self.path}: the state dict refers to {module}.{name}, which a plain tensor "
                "state dict never needs; expected only tensors in an (Ordered)dict."
            )
        return rebuild

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise TorchFileError(f"{self.path}: unexpected persistent id {pid!r}; expected ('storage', ...).")
        _, storage_type, key, _location, numel = pid[:5]
        view = pid[5] if len(pid) > 5 else None
        if view is not None:
            raise TorchFileError(f"{self.path}: storage views ({view!r}) are not supported.")
        if not isinstance(storage_type, _StorageType):
            raise TorchFileError(f"{self.path}: unexpected storage type {storage_type!r}.")
        ref = self.storages.setdefault(str(key), _StorageRef(str(key), storage_type.dtype, int(numel)))
        return ref


def load_legacy_state_dict(path: str) -> dict[str, np.ndarray]:
    """Tensors of the legacy torch file at `path`, by name; floating tensors as float32."""
    if not os.path.isfile(path):
        raise TorchFileError(f"{path} does not exist or is not a file; expected a PyTorch .pth file.")
    with open(path, "rb") as f:
        if f.read(4) == ZIP_SIGNATURE:
            raise TorchFileError(
                f"{path} is in PyTorch's zip format (torch >= 1.6); only the legacy format is "
                "readable without torch. Re-save it with torch.save(..., "
                "_use_new_zipfile_serialization=False)."
            )
        f.seek(0)
        try:
            return _read(f, path)
        except TorchFileError:
            raise
        except (pickle.UnpicklingError, EOFError, struct.error, ValueError, TypeError,
                AttributeError, IndexError, KeyError) as exc:
            raise TorchFileError(
                f"{path} is not a readable legacy PyTorch state dict ({type(exc).__name__}: {exc}); "
                "it is probably truncated or corrupted. Reinstall or re-download it."
            ) from exc


def _read(f: IO[bytes], path: str) -> dict[str, np.ndarray]:
    _read_header(f, path)
    unpickler = _StateDictUnpickler(f, path)
    state = unpickler.load()
    keys = pickle.Unpickler(f).load()
    if not isinstance(keys, list) or set(map(str, keys)) != set(unpickler.storages):
        raise TorchFileError(f"{path}: the storage key list does not match the storages the tensors use.")
    data = {str(key): _read_storage(f, unpickler.storages[str(key)], path) for key in keys}
    return _materialise(state, data, path)


def _read_header(f: IO[bytes], path: str) -> None:
    magic = pickle.Unpickler(f).load()
    if magic != MAGIC_NUMBER:
        raise TorchFileError(
            f"{path}: magic number {magic!r} is not PyTorch's legacy {MAGIC_NUMBER:#x}; "
            "expected a file written by torch.save in the legacy format."
        )
    version = pickle.Unpickler(f).load()
    if version != PROTOCOL_VERSION:
        raise TorchFileError(f"{path}: protocol version {version!r}, expected {PROTOCOL_VERSION}.")
    sys_info = pickle.Unpickler(f).load()
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
        raise TorchFileError(f"{path}: system info {sys_info!r}; expected a little-endian file.")


def _read_storage(f: IO[bytes], ref: _StorageRef, path: str) -> np.ndarray:
    head = f.read(8)
    if len(head) != 8:
        raise TorchFileError(f"{path} is truncated: storage {ref.key}'s element count is missing.")
    (numel,) = struct.unpack("<q", head)
    if numel != ref.numel:
        raise TorchFileError(
            f"{path}: storage {ref.key} holds {numel} elements, its tensors expect {ref.numel}; "
            "the file is corrupted."
        )
    nbytes = numel * ref.dtype.itemsize
    raw = f.read(nbytes)
    if len(raw) != nbytes:
        raise TorchFileError(
            f"{path} is truncated: storage {ref.key} needs {nbytes} bytes, {len(raw)} remain."
        )
    return np.frombuffer(raw, dtype=ref.dtype)


def _materialise(state: Any, data: dict[str, np.ndarray], path: str) -> dict[str, np.ndarray]:
    if not isinstance(state, dict):
        raise TorchFileError(f"{path} holds a {type(state).__name__}; expected a state dict.")
    tensors = {}
    for name, ref in state.items():
        if not isinstance(ref, _TensorRef):
            raise TorchFileError(f"{path}: entry {name!r} is a {type(ref).__name__}, expected a tensor.")
        tensors[str(name)] = _tensor(ref, data[ref.storage.key], f"{path}:{name}")
    return tensors


def _tensor(ref: _TensorRef, storage: np.ndarray, where: str) -> np.ndarray:
    if len(ref.size) != len(ref.stride) or any(s < 0 for s in ref.stride + ref.size) or ref.offset < 0:
        raise TorchFileError(f"{where}: invalid size {ref.size} / stride {ref.stride} / offset {ref.offset}.")
    if 0 in ref.size:
        return np.zeros(ref.size, dtype=_out_dtype(storage.dtype))
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
    if last >= storage.size:
        raise TorchFileError(
            f"{where}: size {ref.size}, stride {ref.stride}, offset {ref.offset} reach element "
            f"{last}, past the storage's {storage.size}; the file is corrupted."
        )
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[ref.offset:], shape=ref.size, strides=[s * item for s in ref.stride], writeable=False
    )
    # A copy: contiguous, writable, native-endian, and independent of the file's buffer.
    return np.array(view, dtype=_out_dtype(storage.dtype), order="C")


def _out_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.float32) if dtype.kind == "f" else dtype.newbyteorder("=")
