"""Read a PyTorch state dict saved in the legacy (pre-1.6, non-zip) format, without torch.

The layout is: pickled magic number, pickled protocol version, pickled system info, the
pickled state dict (whose tensors name their storages through `persistent_load`), a pickled
list of storage keys, then every storage in that order as an int64 element count followed by
its raw little-endian bytes.

A weights file is data, never code. A pickle is a small program, so each of the five is
first checked opcode by opcode (`_check_pickle`): bounded length, every counted read inside
the file, memo indices dense, nesting shallow (CPython hashes nested tuples recursively in C,
so a deep one would crash the process), and at most MAX_PICKLE_OBJECTS objects made. It is
then run by `_RestrictedUnpickler`, which resolves only the globals a state dict needs
(OrderedDict, the tensor rebuild functions, storage types), each to a harmless stand-in of
ours; BUILD (which sets attributes) may set only a state dict's `_metadata`, and is refused
on everything else. What it made is checked and copied with the types' own methods
(`dict.items(state)`, not `state.items()`), so no attribute the pickle set can stand in for
them. Every storage and tensor is then checked against the bytes actually in the file before
anything is allocated for it. Anything else is a `TorchFileError` naming the file and what
was wrong.

Memory: one pickle byte can make a whole object (EMPTY_SET is one byte and makes a 216-byte
set: before the object bound, 4 MiB of them took a 2.1 GB peak RSS). Unpickling one accepted
pickle takes at most UNPICKLE_BYTES_PER_OBJECT (256) bytes per object, stack slot included
(tests/unit/models/test_model_files.py measures the cheapest opcodes for each kind of object:
232 for an empty set, the worst), plus up to 4 bytes per pickle byte for text (a string decoded
to UCS-4): at most 300,000 x 256 B + 4 x 4 MiB, about 90 MiB, for the largest accepted pickle.
"""
from __future__ import annotations

import collections
import io
import logging
import os
import pickle
import pickletools
import struct
from dataclasses import dataclass
from typing import IO, Any, Callable, Iterator

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["TorchFileError", "load_legacy_state_dict"]

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
ZIP_SIGNATURE = b"PK\x03\x04"

# Bounds on what the pickles may make, far above what real files need (EfficientNet-Lite0's
# state-dict pickle is 42 KB and makes 8,043 objects for 296 tensors, about 27 a tensor;
# 300,000 objects fit about 11,000 tensors). Length alone does not bound memory: one byte
# can make a 216-byte object, hence the object count.
MAX_HEADER_PICKLE_BYTES = 64 * 1024
MAX_PICKLE_BYTES = 4 * 1024 * 1024
MAX_PICKLE_OBJECTS = 300_000
# The most memory (bytes) one object a pickle makes may take while unpickling, stack slot
# included; the module docstring's bound, measured by the tests.
UNPICKLE_BYTES_PER_OBJECT = 256
# A state dict nests about 5 deep (dict -> tensor args -> size tuple); 64 leaves room and
# stays far below the C recursion that hashing a deeply nested tuple would need.
MAX_NESTING = 64
MAX_DIMS = 32
# The tensors we return may take at most this many times the file's size: float16 storages
# become float32 (x2), and tensors may share a storage (tied weights). A file whose tensors
# would need more is hostile (the same bytes viewed over and over).
MAX_EXPANSION = 4

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


class _Sealed:
    """Objects a pickle can reach; its BUILD opcode (which sets attributes) may not alter them."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise TorchFileError(f"the pickle tries to set attributes of {self!r} (BUILD); a state dict never does.")


@dataclass(frozen=True)
class _StorageType(_Sealed):
    name: str

    @property
    def dtype(self) -> np.dtype:
        return STORAGE_DTYPES[self.name]


@dataclass(frozen=True)
class _StorageRef(_Sealed):
    key: str
    dtype: np.dtype
    numel: int


@dataclass(frozen=True)
class _TensorRef(_Sealed):
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


class _StateDict(collections.OrderedDict):
    """The OrderedDict a state-dict pickle gets. BUILD may set only `_metadata` (torch's
    per-module format versions, which an inference-only copy does not need, so it is dropped):
    an attribute named `items` or `keys` on a plain OrderedDict would shadow its methods."""

    def __setstate__(self, state: Any) -> None:
        if type(state) is not dict or any(key != "_metadata" for key in dict.keys(state)):
            shown = (", ".join(sorted(repr(key)[:40] for key in dict.keys(state))[:5]) if type(state) is dict
                     else f"a {type(state).__name__}")
            raise TorchFileError(f"the pickle sets {shown} on a state dict (BUILD); only '_metadata' is allowed.")


class _Function(_Sealed):
    """One allowed global: callable by the pickle, nothing else."""

    __slots__ = ("qualname", "fn")

    def __init__(self, qualname: str, fn: Callable[..., Any]) -> None:
        self.qualname, self.fn = qualname, fn

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)

    def __repr__(self) -> str:
        return self.qualname


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or len(value) > MAX_DIMS:
        raise TorchFileError(f"tensor {what} {value!r:.80}; expected a tuple of at most {MAX_DIMS} ints.")
    if not all(type(v) is int for v in value):
        raise TorchFileError(f"tensor {what} {value!r:.80}; expected ints only.")
    return tuple(value)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> _TensorRef:
    # Both _rebuild_tensor and _rebuild_tensor_v2 start with these four; the rest (grad flag,
    # hooks, metadata) means nothing to an inference-only copy.
    if not isinstance(storage, _StorageRef):
        raise TorchFileError(f"a tensor's storage is {type(storage).__name__}; expected a storage reference.")
    if type(offset) is not int:
        raise TorchFileError(f"tensor storage offset {offset!r:.80}; expected an int.")
    return _TensorRef(storage, offset, _ints(size, "size"), _ints(stride, "stride"))


def _rebuild_parameter(data: Any, *_: Any) -> _TensorRef:
    if not isinstance(data, _TensorRef):
        raise TorchFileError(f"a parameter wraps a {type(data).__name__}; expected a tensor.")
    return data


_ALLOWED_FUNCTIONS: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """The only unpickler this module uses; `state_dict` says whether any global may appear.

    The four small pickles around the state dict (magic number, protocol version, system
    info, storage keys) are plain ints, dicts, strings and lists: they may name no global
    and no persistent id at all. The state dict may name only the globals of a tensor state
    dict, and storages only as ('storage', type, key, location, numel) placeholders.
    """

    def __init__(self, file: IO[bytes], path: str, part: str, state_dict: bool = False) -> None:
        super().__init__(file)
        self.path, self.part, self.state_dict = path, part, state_dict
        self.storages: dict[str, _StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        if self.state_dict:
            if module == "collections" and name == "OrderedDict":
                return _StateDict
            if module == "torch" and name in STORAGE_DTYPES:
                return _StorageType(name)
            fn = _ALLOWED_FUNCTIONS.get((module, name))
            if fn is not None:
                return _Function(f"{module}.{name}", fn)
            expected = ("only collections.OrderedDict, torch.*Storage and "
                        "torch._utils._rebuild_tensor(_v2)/_rebuild_parameter")
        else:
            expected = "none at all"
        raise TorchFileError(
            f"{self.path}: the {self.part} pickle refers to the global {module}.{name}, which is "
            f"not allowed (a tensor state dict needs {expected}). The file is not a plain state "
            "dict, or it is hostile; refusing to load it. Re-save only model.state_dict()."
        )

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not self.state_dict:
            raise TorchFileError(f"{self.path}: the {self.part} pickle refers to a storage; it never should.")
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise TorchFileError(f"{self.path}: unexpected persistent id {pid!r:.100}; expected ('storage', ...).")
        _, storage_type, key, location, numel = pid[:5]
        view = pid[5] if len(pid) > 5 else None
        if view is not None:
            raise TorchFileError(f"{self.path}: storage views ({view!r:.80}) are not supported.")
        if not isinstance(storage_type, _StorageType):
            raise TorchFileError(f"{self.path}: unexpected storage type {storage_type!r:.80}.")
        if not isinstance(key, str) or not isinstance(location, str) or type(numel) is not int or numel < 0:
            raise TorchFileError(
                f"{self.path}: storage id ({key!r:.40}, {location!r:.40}, {numel!r:.40}); expected a "
                "string key, a string location and a non-negative element count."
            )
        ref = _StorageRef(key, storage_type.dtype, numel)
        known = self.storages.setdefault(key, ref)
        if known != ref:
            raise TorchFileError(
                f"{self.path}: storage {key} is described twice, as {known.dtype}[{known.numel}] and "
                f"{ref.dtype}[{ref.numel}]; the file is corrupted."
            )
        return known


def load_legacy_state_dict(path: str) -> dict[str, np.ndarray]:
    """Tensors of the legacy torch file at `path`, by name; floating tensors as float32.

    Raises TorchFileError for anything but a plain tensor state dict, before running any
    code the file names or allocating more than the file's size allows.
    """
    if not os.path.isfile(path):
        raise TorchFileError(f"{path} does not exist or is not a file; expected a PyTorch .pth file.")
    with open(path, "rb") as f:
        # The storages are read anyway, and a bytes object cannot change under us (an mmap
        # could, and dies by SIGBUS when the file shrinks). The size is what we check against.
        data = f.read()
    if data[:4] == ZIP_SIGNATURE:
        # Refused before any pickle in it is looked at: that format is not supported here.
        raise TorchFileError(
            f"{path} is in PyTorch's zip format (torch >= 1.6); only the legacy format is "
            "readable without torch. Re-save it with torch.save(..., "
            "_use_new_zipfile_serialization=False)."
        )
    try:
        return _Reader(data, path).read()
    except TorchFileError as exc:
        if str(exc).startswith(path):
            raise
        # Raised by a stand-in the pickle called, which does not know the file's name.
        raise TorchFileError(f"{path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, struct.error, ValueError, TypeError, AttributeError,
            IndexError, KeyError, RecursionError, MemoryError, OverflowError) as exc:
        raise TorchFileError(
            f"{path} is not a readable legacy PyTorch state dict ({type(exc).__name__}: {exc}); "
            "it is probably truncated or corrupted. Reinstall or re-download it."
        ) from exc


class _Reader:
    def __init__(self, data: bytes, path: str) -> None:
        self.data, self.path, self.pos = data, path, 0

    def read(self) -> dict[str, np.ndarray]:
        self._read_header()
        unpickler = self._unpickler("state dict", MAX_PICKLE_BYTES, state_dict=True)
        state = unpickler.load()
        keys = self._unpickler("storage key list", MAX_PICKLE_BYTES).load()
        if (type(keys) is not list or not all(type(k) is str for k in keys)
                or len(set(keys)) != len(keys) or set(keys) != set(unpickler.storages)):
            raise TorchFileError(
                f"{self.path}: the storage key list does not match the storages the tensors use "
                "(expected each of them once); the file is corrupted."
            )
        tensors = _tensor_refs(state, self.path)
        spans = self._storage_spans([unpickler.storages[k] for k in keys])
        _check_tensors(tensors, len(self.data), self.path)
        # Only now, with every size checked against the file, does anything get allocated.
        view = memoryview(self.data)
        storages = {k: np.frombuffer(view[a:b], dtype=unpickler.storages[k].dtype) for k, (a, b) in spans.items()}
        return {name: _tensor(ref, storages[ref.storage.key], f"{self.path}:{name}")
                for name, ref in tensors.items()}

    def _unpickler(self, part: str, limit: int, state_dict: bool = False) -> _RestrictedUnpickler:
        end = _check_pickle(self.data, self.pos, limit, f"{self.path}: the {part} pickle")
        # Exactly this pickle's bytes: the unpickler cannot read past it.
        buffer = io.BytesIO(self.data[self.pos:end])
        self.pos = end
        return _RestrictedUnpickler(buffer, self.path, part, state_dict)

    def _read_header(self) -> None:
        magic = self._unpickler("magic number", MAX_HEADER_PICKLE_BYTES).load()
        if type(magic) is not int or magic != MAGIC_NUMBER:
            raise TorchFileError(
                f"{self.path}: magic number {magic!r:.80} is not PyTorch's legacy {MAGIC_NUMBER:#x}; "
                "expected a file written by torch.save in the legacy format."
            )
        version = self._unpickler("protocol version", MAX_HEADER_PICKLE_BYTES).load()
        if type(version) is not int or version != PROTOCOL_VERSION:
            raise TorchFileError(f"{self.path}: protocol version {version!r:.80}, expected {PROTOCOL_VERSION}.")
        sys_info = self._unpickler("system info", MAX_HEADER_PICKLE_BYTES).load()
        if type(sys_info) is not dict or dict.get(sys_info, "little_endian") is not True:
            raise TorchFileError(f"{self.path}: system info {sys_info!r:.200}; expected a little-endian file.")

    def _storage_spans(self, refs: list[_StorageRef]) -> dict[str, tuple[int, int]]:
        """Where each storage's bytes lie in the file, each count checked against the file."""
        spans = {}
        for ref in refs:
            head = self.data[self.pos:self.pos + 8]
            if len(head) != 8:
                raise TorchFileError(f"{self.path} is truncated: storage {ref.key}'s element count is missing.")
            (numel,) = struct.unpack("<q", head)
            if numel != ref.numel:
                raise TorchFileError(
                    f"{self.path}: storage {ref.key} holds {numel} elements, its tensors expect "
                    f"{ref.numel}; the file is corrupted."
                )
            start = self.pos + 8
            nbytes = numel * ref.dtype.itemsize
            remaining = len(self.data) - start
            if nbytes > remaining:
                raise TorchFileError(
                    f"{self.path} is truncated: storage {ref.key} needs {nbytes} bytes, {remaining} remain."
                )
            spans[ref.key] = (start, start + nbytes)
            self.pos = start + nbytes
        return spans


def _tensor_refs(state: Any, path: str) -> dict[str, _TensorRef]:
    # Exact types and dict's own methods: whatever attributes the pickle gave the object, the
    # entries checked are the entries copied.
    if type(state) not in (dict, _StateDict):
        raise TorchFileError(f"{path} holds a {type(state).__name__}; expected a state dict.")
    entries = list(dict.items(state))
    for name, ref in entries:
        if type(name) is not str:
            raise TorchFileError(f"{path}: a state dict key is a {type(name).__name__}; expected names.")
        if type(ref) is not _TensorRef:
            raise TorchFileError(f"{path}: entry {name[:80]!r} is a {type(ref).__name__}, expected a tensor.")
    return dict(entries)


def _check_tensors(tensors: dict[str, _TensorRef], file_size: int, path: str) -> None:
    """Every tensor inside its storage, no broadcast, all together bounded by the file size."""
    total = 0
    for name, ref in tensors.items():
        numel = _check_geometry(ref, ref.storage.numel, f"{path}:{name}")
        total += numel * _out_dtype(ref.storage.dtype).itemsize
    limit = MAX_EXPANSION * file_size
    if total > limit:
        raise TorchFileError(
            f"{path}: its tensors would take {total} bytes, more than {MAX_EXPANSION}x the file's "
            f"{file_size}; they view the same storage bytes over and over. Refusing a hostile file."
        )


def _check_geometry(ref: _TensorRef, available: int, where: str) -> int:
    """The tensor's element count, once its size, stride and offset fit `available` elements."""
    size, stride, offset = ref.size, ref.stride, ref.offset
    if len(size) != len(stride) or any(s < 0 for s in size + stride) or offset < 0:
        raise TorchFileError(
            f"{where}: invalid size {size} / stride {stride} / offset {offset}; expected as many "
            "non-negative sizes as strides and a non-negative offset."
        )
    numel = 1
    for n in size:
        numel *= n  # exact (Python ints), so a huge size cannot wrap around
    if numel == 0:
        if offset > available:
            raise TorchFileError(f"{where}: storage offset {offset} is past the storage's {available} elements.")
        return 0
    if any(s == 0 and n > 1 for n, s in zip(size, stride)):
        raise TorchFileError(
            f"{where}: size {size} with stride {stride} repeats one element along a dimension "
            "(an expanded tensor); a saved state dict never holds one. The file is corrupted or hostile."
        )
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= available:
        raise TorchFileError(
            f"{where}: size {size}, stride {stride}, offset {offset} reach element "
            f"{last}, past the storage's {available}; the file is corrupted."
        )
    if numel > available:
        raise TorchFileError(
            f"{where}: size {size} has {numel} elements, more than its storage's {available} "
            "(the elements overlap); the file is corrupted or hostile."
        )
    return numel


def _tensor(ref: _TensorRef, storage: np.ndarray, where: str) -> np.ndarray:
    numel = _check_geometry(ref, min(ref.storage.numel, storage.size), where)
    if numel == 0:
        return np.zeros(ref.size, dtype=_out_dtype(storage.dtype))
    item = storage.itemsize
    # A dimension of size 1 is never stepped along: its stride, whatever the file says, is moot.
    strides = [s * item if n > 1 else 0 for n, s in zip(ref.size, ref.stride)]
    view = np.lib.stride_tricks.as_strided(storage[ref.offset:], shape=ref.size, strides=strides, writeable=False)
    # A copy: contiguous, writable, native-endian, and independent of the file's buffer.
    return np.array(view, dtype=_out_dtype(storage.dtype), order="C")


def _out_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.float32) if dtype.kind == "f" else dtype.newbyteorder("=")


# --- Pickle checks -----------------------------------------------------------------------------

_MARK = object()
_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}
_MEMO_GETS = {"GET", "BINGET", "LONG_BINGET"}
# Opcodes that add to a container below them on the stack rather than make a new object.
_MUTATORS = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}
# Nothing a state dict needs; each would reach state outside the pickle (copyreg's
# extension registry, out-of-band buffers).
_FORBIDDEN = {"EXT1", "EXT2", "EXT4", "NEXT_BUFFER", "READONLY_BUFFER"}


def _check_pickle(data: bytes, start: int, limit: int, what: str) -> int:
    """End offset of the pickle at `start`, once it is known to be safe to hand to the unpickler.

    pickletools reads each opcode's argument from an in-memory buffer (so a claimed length
    beyond the data costs nothing), and a small model of the unpickler's stack tracks how
    deeply each object nests, so that nothing is built that CPython could not hash or free.
    The C unpickler would allocate a claimed length before reading it, and grows its memo to
    twice any index it is given; both are checked here first.
    """
    window = io.BytesIO(data[start:start + limit])
    stack: list[Any] = []  # nesting depth of each object, or _MARK
    memo: dict[int, int] = {}
    objects = 0
    try:
        for opcode, arg, pos in _genops(window, len(data) - start > limit, limit, what):
            name = opcode.name
            if name != "MARK":
                # Every push is an object or a stack slot the unpickler holds until STOP
                # (pickletools lists DUP as pushing two: the object it copies, and the copy).
                objects += 1 if name == "DUP" else len(opcode.stack_after)
                if objects > MAX_PICKLE_OBJECTS:
                    raise TorchFileError(
                        f"{what} makes more than {MAX_PICKLE_OBJECTS} objects (by byte {start + pos}); a state "
                        "dict makes about 27 a tensor. Refusing a file built to exhaust memory.")
            if name in _FORBIDDEN:
                raise TorchFileError(f"{what} uses the {name} opcode at byte {start + pos}; a state dict never does.")
            if name == "FRAME" and arg > limit:
                raise TorchFileError(f"{what} declares a {arg}-byte frame; at most {limit} bytes are allowed.")
            if name in _MEMO_PUTS or name == "MEMOIZE" or name == "DUP":
                if not stack or stack[-1] is _MARK:
                    raise IndexError
            if name in _MEMO_PUTS or name == "MEMOIZE":
                index = len(memo) if name == "MEMOIZE" else int(arg)
                # Picklers number their memo entries 0, 1, 2, ...; a far index would make
                # the unpickler allocate a huge memo.
                if index > len(memo):
                    raise TorchFileError(f"{what} stores memo entry {index} with only {len(memo)} made.")
                memo[index] = stack[-1]
                continue
            if name in _MEMO_GETS:
                if int(arg) not in memo:
                    raise TorchFileError(f"{what} reads memo entry {arg}, which was never stored.")
                stack.append(memo[int(arg)])
                continue
            if name == "DUP":
                stack.append(stack[-1])
                continue
            if name == "STOP":
                if len(stack) != 1 or stack[0] is _MARK:
                    raise TorchFileError(f"{what} ends with {len(stack)} objects on its stack; expected one.")
                return start + window.tell()
            popped = _pop(stack, opcode)
            if name == "MARK":
                stack.append(_MARK)
                continue
            depths = [d for d in popped if d is not _MARK]
            if name in _MUTATORS:
                container, items = depths[0], depths[1:]
                depth = max([container] + [d + 1 for d in items])
            else:
                depth = 1 + max(depths, default=-1)
            if depth > MAX_NESTING:
                raise TorchFileError(
                    f"{what} nests objects {depth} deep at byte {start + pos}; at most {MAX_NESTING} "
                    "are allowed (a state dict nests about 5)."
                )
            stack.extend([depth] * len(opcode.stack_after))
    except IndexError:
        raise TorchFileError(f"{what} is malformed: an opcode takes more objects than its stack holds.") from None
    raise AssertionError("unreachable: _genops ends at STOP or raises")


def _genops(window: io.BytesIO, capped: bool, limit: int, what: str) -> Iterator[tuple[Any, Any, int]]:
    """pickletools.genops up to STOP; `capped`: the file goes on past the `limit` bytes in `window`."""
    try:
        for opcode, arg, pos in pickletools.genops(window):
            yield opcode, arg, pos
            if opcode.name == "STOP":
                return
    except ValueError as exc:
        # Its counted reads never take more than is there, and say so with a ValueError.
        if window.tell() < len(window.getbuffer()):
            raise TorchFileError(f"{what} is malformed ({exc}).") from None
        if capped:
            raise TorchFileError(f"{what} is longer than the {limit} bytes allowed, or never ends.") from None
        raise TorchFileError(f"{what} is truncated or corrupted ({exc}); reinstall or re-download the file.") from None


def _pop(stack: list[Any], opcode: Any) -> list[Any]:
    """Pop what `opcode` consumes (as pickletools describes it); IndexError on underflow."""
    before = opcode.stack_before
    if pickletools.markobject in before or (opcode.name == "POP" and stack and stack[-1] is _MARK):
        popped = []
        while stack[-1] is not _MARK:  # IndexError when there is no mark
            popped.append(stack.pop())
        stack.pop()
        below = before.index(pickletools.markobject) if pickletools.markobject in before else 0
        for _ in range(below):
            popped.append(stack.pop())
        popped.reverse()
        return popped
    # Like CPython's unpickler, an opcode may not take objects from below the last mark.
    popped = stack[len(stack) - len(before):] if before else []
    if len(popped) < len(before) or any(d is _MARK for d in popped):
        raise IndexError
    del stack[len(stack) - len(before):]
    return popped
