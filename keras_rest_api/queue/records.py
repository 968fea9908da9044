"""The queue protocol between the tiers: every Redis key name and every record layout, typed.

Three records travel through Redis:
- a `Job` (one image to classify) as the fields of a stream entry, its pixels as raw uint8 bytes
  (224x224x3 = 147 KB, not the tutorial's 803 KB of base64 float32 JSON);
- a `Result` (the answer for one job) as compact JSON pushed onto a list only its request waits on;
- a `Heartbeat` (a live model server, what it serves and its cumulative figures) as JSON with a TTL.

Everything read back from Redis is untrusted input: anyone who can write to Redis can forge a
record. `from_redis` checks every field's type and range and raises `RecordError` with what was
wrong, so a hostile record is rejected and logged by its reader instead of crashing a loop. Any
other failure while parsing (a nesting deep enough for RecursionError, a MemoryError, a TypeError
from a field of an unexpected type) also becomes a `RecordError`: nothing else escapes a parser
(tests/unit/queue/test_record_fuzz.py checks that with generated records).

Nothing outside this module spells a key name or a record's layout.
"""
from __future__ import annotations

import functools
import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence, TypeVar

import numpy as np

WIRE_VERSION = b"1"
# Bucket bounds (seconds) of the inference-time histogram model servers publish with heartbeats.
INFERENCE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Bounds on what a record may claim. Generous for any real model or deployment, tight enough
# that a forged record cannot make a reader allocate gigabytes or loop for minutes.
MAX_SIDE = 8192
MAX_CLASSES = 100_000
MAX_TOP_K = MAX_CLASSES
MAX_TEXT = 1024
MAX_RESULT_BYTES = 8 * 1024 * 1024
MAX_HEARTBEAT_BYTES = 256 * 1024
MAX_TIMING_ENTRIES = 16
MAX_BATCH_SIZE = 65_536
MAX_MODELS_PER_SERVER = 256

_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_SERVER_NAME = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
# HTTP statuses a model server may ask the web tier to answer with.
RESULT_STATUSES = frozenset({400, 413, 422, 500, 502, 503, 504})


class RecordError(ValueError):
    """A record read from Redis that is malformed, out of range, or of another wire version."""


_Parsed = TypeVar("_Parsed")


def _record_errors_only(what: str) -> Callable[[Callable[..., _Parsed]], Callable[..., _Parsed]]:
    """Make every failure of a parser of `what` records a RecordError.

    The parsers check what they expect, but a forged record can fail in ways no check names:
    JSON nested 100,000 deep raises RecursionError, a field of another type a TypeError deep in
    a comparison. Each is a bad record, to be skipped and logged by the reader like any other,
    never an exception that takes down a request or a loop (a 500 on every route before).
    """
    def wrap(parse: Callable[..., _Parsed]) -> Callable[..., _Parsed]:
        @functools.wraps(parse)
        def parse_or_raise_record_error(*args: Any) -> _Parsed:
            try:
                return parse(*args)
            except RecordError:
                raise
            except (RecursionError, MemoryError) as exc:
                raise RecordError(f"{what} record nested too deeply or too large ({type(exc).__name__})") from None
            except Exception as exc:  # noqa: BLE001 - whatever a forged record trips over, it is a bad record
                raise RecordError(f"malformed {what} record ({type(exc).__name__}: {str(exc)[:80]})") from None
        return parse_or_raise_record_error
    return wrap


def is_valid_id(value: str) -> bool:
    """Whether `value` may name a job or request in keys and log lines."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def is_valid_server_name(value: str) -> bool:
    """Whether `value` may name a model server in keys, consumer groups and metric labels."""
    return isinstance(value, str) and _SERVER_NAME.fullmatch(value) is not None


@dataclass(frozen=True)
class Keys:
    """Names of every Redis key the service uses, under one prefix; also their patterns (for ACLs)."""

    prefix: str
    queue_name: str

    def queue(self, model: str, version: str) -> str:
        """The stream of jobs for one version of one model (one consumer group of model servers reads it)."""
        return f"{self.prefix}:queue:{self.queue_name}:{model}:{version}"

    def result(self, job_id: str) -> str:
        """The list a job's answer is pushed onto; only its own request pops it."""
        return f"{self.prefix}:result:{job_id}"

    def pending(self, job_id: str) -> str:
        """Marks a job whose result may be fetched later (GET /result) as known and unfinished."""
        return f"{self.prefix}:job:{job_id}"

    @property
    def servers(self) -> str:
        """Sorted set of model-server names by the time of their last heartbeat."""
        return f"{self.prefix}:servers:{self.queue_name}"

    def server(self, name: str) -> str:
        """One model server's heartbeat record."""
        return f"{self.prefix}:server:{self.queue_name}:{name}"

    # Glob patterns of each kind of key: for SCAN in tests and tools, and for Redis ACL rules.
    @property
    def all_queues(self) -> str:
        return self.queue("*", "*")

    @property
    def all_results(self) -> str:
        return self.result("*")

    @property
    def all_pending(self) -> str:
        return self.pending("*")

    @property
    def all_servers(self) -> str:
        return self.server("*")


# --- jobs -------------------------------------------------------------------------------------
@dataclass
class Job:
    """One image waiting to be classified."""

    id: str
    pixels: np.ndarray  # uint8, (height, width, 3)
    top_k: int
    deadline: float  # epoch seconds after which nobody waits for the answer
    enqueued_at: float = field(default_factory=time.time)
    # Fetched later through GET /result: an expired job is answered, not silently dropped.
    fetch_later: bool = False
    request_id: str = ""
    # Also return the whole probability vector (for protocols that ask for the output tensor).
    full_output: bool = False

    def to_redis(self) -> dict[str, bytes]:
        """Stream fields for this job; the pixels go as raw bytes."""
        pixels = np.ascontiguousarray(self.pixels, dtype=np.uint8)
        if pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ValueError(f"expected pixels of shape (height, width, 3), received {pixels.shape}")
        height, width, _ = pixels.shape
        return {
            "v": WIRE_VERSION,
            "id": self.id.encode(),
            "shape": f"{height},{width}".encode(),
            "top_k": str(self.top_k).encode(),
            "deadline": repr(self.deadline).encode(),
            "enqueued_at": repr(self.enqueued_at).encode(),
            "later": b"1" if self.fetch_later else b"0",
            "full": b"1" if self.full_output else b"0",
            "rid": self.request_id.encode(),
            "pixels": pixels.tobytes(),
        }

    @classmethod
    @_record_errors_only("job")
    def from_redis(cls, fields: Mapping[bytes, bytes]) -> "Job":
        """The job in a stream entry's fields; RecordError if they are not a valid job."""
        try:
            version = fields[b"v"]
            if version != WIRE_VERSION:
                raise RecordError(f"wire version {_shown(version)}, expected {WIRE_VERSION!r}")
            job_id = fields[b"id"].decode("ascii")
            request_id = fields.get(b"rid", b"").decode("ascii")
            height, width = (int(n) for n in fields[b"shape"].split(b","))
            top_k = int(fields[b"top_k"])
            deadline = float(fields[b"deadline"])
            enqueued_at = float(fields[b"enqueued_at"])
            data = fields[b"pixels"]
        except RecordError:
            raise
        except (KeyError, ValueError, UnicodeDecodeError) as exc:
            raise RecordError(f"malformed job entry: {type(exc).__name__}: {exc}") from None
        _check(is_valid_id(job_id), f"job id {_shown(job_id)} is not 1-64 of [A-Za-z0-9._-]")
        _check(request_id == "" or is_valid_id(request_id), "request id is not 1-64 of [A-Za-z0-9._-]")
        _check(1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE,
               f"image shape {height}x{width} outside 1..{MAX_SIDE}")
        _check(len(data) == height * width * 3,
               f"{len(data)} pixel bytes for a {height}x{width}x3 image ({height * width * 3} expected)")
        _check(1 <= top_k <= MAX_TOP_K, f"top_k {top_k} outside 1..{MAX_TOP_K}")
        _check(math.isfinite(deadline) and math.isfinite(enqueued_at), "deadline or enqueue time not finite")
        return cls(
            id=job_id,
            pixels=np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3),
            top_k=top_k,
            deadline=deadline,
            enqueued_at=enqueued_at,
            fetch_later=fields.get(b"later") == b"1",
            request_id=request_id,
            full_output=fields.get(b"full") == b"1",
        )


# --- results ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prediction:
    label: str
    probability: float
    # The class's index in the output vector, for jobs that asked for the full output (the v2
    # protocol's classification extension answers "score:index:label"); None otherwise.
    index: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {"label": self.label, "probability": self.probability}

    def to_json(self) -> dict[str, Any]:
        """The record on the wire: as_json, plus the index when there is one."""
        return self.as_json() if self.index is None else {**self.as_json(), "index": self.index}


@dataclass
class Result:
    """The answer for one job: predictions, or an error with the HTTP status the client should get."""

    success: bool
    predictions: list[Prediction] = field(default_factory=list)
    error: str = ""
    status: int = 200
    # Milliseconds spent in each stage (queue, inference) and the batch size, for Server-Timing.
    timing: dict[str, float] = field(default_factory=dict)
    # The whole output vector, when the job asked for it (Job.full_output).
    probabilities: list[float] | None = None
    # Which model and version answered: every answer is labelled with the version that produced it.
    model: str = ""
    version: str = ""

    @classmethod
    def ok(cls, predictions: Sequence[Prediction], timing: Mapping[str, float],
           probabilities: Sequence[float] | None = None, model: str = "", version: str = "") -> "Result":
        return cls(True, list(predictions), timing=dict(timing),
                   probabilities=None if probabilities is None else [float(p) for p in probabilities],
                   model=model, version=version)

    @classmethod
    def failure(cls, message: str, status: int, timing: Mapping[str, float] | None = None) -> "Result":
        if status not in RESULT_STATUSES:
            raise ValueError(f"status {status} is not one a model server answers with ({sorted(RESULT_STATUSES)})")
        return cls(False, error=message, status=status, timing=dict(timing or {}))

    def to_redis(self) -> bytes:
        body: dict[str, Any] = {"success": self.success, "timing": self.timing}
        if self.success:
            body["predictions"] = [p.to_json() for p in self.predictions]
            if self.probabilities is not None:
                body["probabilities"] = self.probabilities
            if self.model:
                body["model"], body["version"] = self.model, self.version
        else:
            body.update(error=self.error, status=self.status)
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    @_record_errors_only("result")
    def from_redis(cls, data: bytes) -> "Result":
        """The result in `data`; RecordError if it is not a valid result record."""
        body = _json_object(data, MAX_RESULT_BYTES, "result")
        success = body.get("success")
        _check(isinstance(success, bool), "result without a boolean 'success'")
        timing = _timing(body.get("timing", {}))
        if not success:
            status, error = body.get("status"), body.get("error")
            _check(isinstance(status, int) and not isinstance(status, bool) and status in RESULT_STATUSES,
                   f"error status {_shown(status)} not one of {sorted(RESULT_STATUSES)}")
            _check(isinstance(error, str) and len(error) <= MAX_TEXT * 4, "error message missing or too long")
            return cls(False, error=error, status=status, timing=timing)
        raw = body.get("predictions")
        _check(isinstance(raw, list) and len(raw) <= MAX_TOP_K, "predictions missing or too many")
        predictions = [_prediction(item) for item in raw]
        probabilities = body.get("probabilities")
        if probabilities is not None:
            _check(isinstance(probabilities, list) and len(probabilities) <= MAX_CLASSES
                   and all(_is_finite_number(p) for p in probabilities), "probabilities not a list of numbers")
            probabilities = [float(p) for p in probabilities]
        model, version = body.get("model", ""), body.get("version", "")
        _check(model == "" or is_valid_model_name(model), "model is not a valid model name")
        _check(version == "" or is_valid_version(version), "version is not a valid version")
        return cls(True, predictions, timing=timing, probabilities=probabilities, model=model, version=version)

    def as_response(self) -> dict[str, Any]:
        """The tutorial's JSON body for this result, labelled with the model version that produced it."""
        if self.success:
            body: dict[str, Any] = {"success": True, "predictions": [p.as_json() for p in self.predictions]}
            if self.model:
                body.update(model=self.model, version=self.version)
            return body
        return {"success": False, "error": self.error}


def _prediction(item: Any) -> Prediction:
    _check(isinstance(item, dict), "a prediction is not an object")
    label, probability = item.get("label"), item.get("probability")
    _check(isinstance(label, str) and len(label) <= MAX_TEXT, "a prediction's label is not a short string")
    _check(_is_finite_number(probability), "a prediction's probability is not a finite number")
    index = item.get("index")
    _check(index is None or (isinstance(index, int) and not isinstance(index, bool) and 0 <= index < MAX_CLASSES),
           "a prediction's index is not a class index")
    return Prediction(label, float(probability), index)


def _timing(raw: Any) -> dict[str, float]:
    _check(isinstance(raw, dict) and len(raw) <= MAX_TIMING_ENTRIES, "timing is not a small object")
    _check(all(isinstance(k, str) and re.fullmatch(r"[a-z_]{1,32}", k) and _is_finite_number(v)
               for k, v in raw.items()), "timing entries must be short lowercase names with finite numbers")
    return {k: float(v) for k, v in raw.items()}


# --- model contracts --------------------------------------------------------------------------
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_VERSION = re.compile(r"[0-9]{1,9}")
RESIZE_POLICIES = ("center_crop", "squash", "letterbox")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
NORMALIZATIONS = ("raw", "unit", "tf", "torch", "caffe", "mean_std")
CHANNEL_ORDERS = ("RGB", "BGR")
MODEL_STATES = ("loading", "ready", "draining")


def is_valid_model_name(value: str) -> bool:
    """Whether `value` may name a model in URLs, keys and metric labels."""
    return isinstance(value, str) and _MODEL_NAME.fullmatch(value) is not None


def is_valid_version(value: str) -> bool:
    """Versions are folder names of decimal digits, compared as numbers ("10" after "9")."""
    return isinstance(value, str) and _VERSION.fullmatch(value) is not None


@dataclass(frozen=True)
class ModelContract:
    """What a model declares about its input and output: all the web tier needs to prepare an image.

    Geometry (the web tier applies it to the decoded photo, producing uint8 RGB pixels of
    input_height x input_width): `resize` is "center_crop" (scale the shorter side to
    side / crop_fraction, then cut the centre), "squash" (scale each side to the input, ignoring
    aspect) or "letterbox" (scale to fit, pad with `pad_value`). Normalisation (the model server
    applies it to the whole batch): `normalization` with `mean`/`std` for "mean_std", after
    reordering to `channel_order`.
    """

    name: str
    version: str
    input_height: int
    input_width: int
    classes: int
    resize: str = "center_crop"
    crop_fraction: float = 0.875
    interpolation: str = "bilinear"
    pad_value: int = 0
    channel_order: str = "RGB"
    normalization: str = "unit"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    max_batch_size: int = 8
    max_wait_ms: int = 0
    precision: str = "float32"

    def __post_init__(self) -> None:
        _validate_contract(self)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.input_height, self.input_width

    def as_json(self) -> dict[str, Any]:
        body = dataclass_as_dict(self)
        body["mean"], body["std"] = list(self.mean), list(self.std)
        return body

    @classmethod
    @_record_errors_only("model contract")
    def from_json(cls, body: Any) -> "ModelContract":
        """The contract in a heartbeat's JSON; RecordError if anything is missing or out of range."""
        _check(isinstance(body, dict), "a model contract is not an object")
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(body) - known
        _check(not unknown, f"model contract has unknown fields {sorted(unknown)[:5]}")
        values = dict(body)
        for key in ("mean", "std"):
            if key in values:
                _check(isinstance(values[key], list) and len(values[key]) == 3, f"{key} is not 3 numbers")
                values[key] = tuple(values[key])
        try:
            return cls(**values)
        except TypeError as exc:
            raise RecordError(f"model contract incomplete: {exc}") from None


def dataclass_as_dict(value: Any) -> dict[str, Any]:
    return {name: getattr(value, name) for name in value.__dataclass_fields__}


def _validate_contract(c: ModelContract) -> None:
    _check(is_valid_model_name(c.name), f"model name {_shown(c.name)} is not 1-64 of [A-Za-z0-9_.-]")
    _check(is_valid_version(c.version), f"version {_shown(c.version)} is not a number of up to 9 digits")
    for key, low, high in (("input_height", 1, MAX_SIDE), ("input_width", 1, MAX_SIDE), ("classes", 1, MAX_CLASSES),
                           ("pad_value", 0, 255), ("max_batch_size", 1, MAX_BATCH_SIZE), ("max_wait_ms", 0, 60_000)):
        value = getattr(c, key)
        _check(isinstance(value, int) and not isinstance(value, bool) and low <= value <= high,
               f"{key} {_shown(value)} is not an integer in {low}..{high}")
    _check(c.resize in RESIZE_POLICIES, f"resize {_shown(c.resize)} is not one of {', '.join(RESIZE_POLICIES)}")
    _check(c.interpolation in INTERPOLATIONS,
           f"interpolation {_shown(c.interpolation)} is not one of {', '.join(INTERPOLATIONS)}")
    _check(c.normalization in NORMALIZATIONS,
           f"normalization {_shown(c.normalization)} is not one of {', '.join(NORMALIZATIONS)}")
    _check(c.channel_order in CHANNEL_ORDERS, f"channel_order {_shown(c.channel_order)} is not RGB or BGR")
    _check(_is_finite_number(c.crop_fraction) and 0.05 <= c.crop_fraction <= 1.0,
           f"crop_fraction {_shown(c.crop_fraction)} is not a number in 0.05..1")
    _check(all(_is_finite_number(v) for v in (*c.mean, *c.std)) and all(v != 0 for v in c.std),
           "mean and std must be finite numbers, std non-zero")
    _check(isinstance(c.precision, str) and len(c.precision) <= 32, "precision is not a short string")


# --- heartbeats -------------------------------------------------------------------------------
@dataclass
class InferenceFigures:
    """Cumulative histogram of model-call durations (INFERENCE_BUCKETS), for /metrics."""

    buckets: list[int] = field(default_factory=lambda: [0] * len(INFERENCE_BUCKETS))
    sum: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        for i, bound in enumerate(INFERENCE_BUCKETS):
            if seconds <= bound:
                self.buckets[i] += 1
        self.sum += seconds
        self.count += 1

    def add(self, other: "InferenceFigures") -> None:
        """Fold `other`'s observations into these."""
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets)]
        self.sum += other.sum
        self.count += other.count


@dataclass(frozen=True)
class ServedModel:
    """One model version on one model server: its contract, and whether it takes traffic."""

    contract: ModelContract
    # loading: not yet answering; ready: takes new traffic; draining: answers what is queued for
    # it, takes no new default traffic, and is unloaded once its queue is empty.
    state: str = "ready"

    def as_json(self) -> dict[str, Any]:
        return {"contract": self.contract.as_json(), "state": self.state}

    @classmethod
    @_record_errors_only("served model")
    def from_json(cls, body: Any) -> "ServedModel":
        _check(isinstance(body, dict) and body.get("state") in MODEL_STATES,
               f"a served model's state is not one of {', '.join(MODEL_STATES)}")
        return cls(ModelContract.from_json(body.get("contract")), body["state"])


@dataclass
class Heartbeat:
    """A live model server: the model versions it serves (the web tier prepares images from their
    contracts) and its cumulative figures."""

    name: str
    models: list[ServedModel] = field(default_factory=list)
    host: str = ""
    pid: int = 0
    device: str = ""
    started: float = 0.0
    seen: float = 0.0
    batch_sizes: dict[int, int] = field(default_factory=dict)
    inference: InferenceFigures = field(default_factory=InferenceFigures)
    redelivered: int = 0

    def to_redis(self) -> bytes:
        body = {
            "name": self.name, "models": [m.as_json() for m in self.models], "host": self.host, "pid": self.pid,
            "device": self.device, "started": self.started, "seen": self.seen,
            "batch_sizes": {str(size): count for size, count in self.batch_sizes.items()},
            "inference": {"buckets": self.inference.buckets, "sum": self.inference.sum,
                          "count": self.inference.count},
            "redelivered": self.redelivered,
        }
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    @_record_errors_only("heartbeat")
    def from_redis(cls, data: bytes) -> "Heartbeat":
        """The heartbeat in `data`; RecordError if it is not a valid heartbeat record."""
        body = _json_object(data, MAX_HEARTBEAT_BYTES, "heartbeat")
        name = body.get("name")
        _check(is_valid_server_name(name), "heartbeat without a valid server name")
        for key in ("host", "device"):
            _check(isinstance(body.get(key, ""), str) and len(body.get(key, "")) <= MAX_TEXT,
                   f"heartbeat field {key!r} is not a short string")
        raw_models = body.get("models")
        _check(isinstance(raw_models, list) and len(raw_models) <= MAX_MODELS_PER_SERVER,
               f"heartbeat models is not a list of at most {MAX_MODELS_PER_SERVER}")
        models = [ServedModel.from_json(m) for m in raw_models]
        raw_sizes = body.get("batch_sizes", {})
        _check(isinstance(raw_sizes, dict) and len(raw_sizes) <= 1024, "batch_sizes is not a small object")
        batch_sizes: dict[int, int] = {}
        for size, count in raw_sizes.items():
            _check(isinstance(size, str) and size.isdigit() and 1 <= int(size) <= MAX_BATCH_SIZE
                   and isinstance(count, int) and count >= 0, "batch_sizes entries must be size: count")
            batch_sizes[int(size)] = count
        raw_inference = body.get("inference", {})
        _check(isinstance(raw_inference, dict), "inference is not an object")
        buckets = raw_inference.get("buckets", [0] * len(INFERENCE_BUCKETS))
        _check(isinstance(buckets, list) and len(buckets) == len(INFERENCE_BUCKETS)
               and all(isinstance(b, int) and b >= 0 for b in buckets), "inference buckets malformed")
        total = raw_inference.get("sum", 0.0)
        _check(_is_finite_number(total) and total >= 0, "inference sum is not a finite number >= 0")
        return cls(
            name=name, models=models, host=body.get("host", ""), pid=_int(body, "pid", 0, 2**31, default=0),
            device=body.get("device", ""), started=_float(body, "started"), seen=_float(body, "seen"),
            batch_sizes=batch_sizes,
            inference=InferenceFigures(buckets, float(total), _int(raw_inference, "count", 0, 2**62, default=0)),
            redelivered=_int(body, "redelivered", 0, 2**62, default=0),
        )


# --- checks -----------------------------------------------------------------------------------
def _check(condition: bool, message: str) -> None:
    if not condition:
        raise RecordError(message)


def _shown(value: Any) -> str:
    """`value` as a message may show it: a forged record's text is cut to a few dozen characters."""
    text = repr(value) if isinstance(value, (str, bytes, int, float, bool, type(None))) else type(value).__name__
    return text if len(text) <= 40 else text[:40] + "..."


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _json_object(data: bytes, limit: int, what: str) -> dict[str, Any]:
    _check(isinstance(data, (bytes, bytearray)) and len(data) <= limit, f"{what} record over {limit} bytes")
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordError(f"{what} record is not JSON: {exc}") from None
    _check(isinstance(body, dict), f"{what} record is not a JSON object")
    return body


def _int(body: Mapping[str, Any], key: str, low: int, high: int, default: int | None = None) -> int:
    value = body.get(key, default)
    _check(isinstance(value, int) and not isinstance(value, bool) and low <= value <= high,
           f"{key} {_shown(value)} is not an integer in {low}..{high}")
    return value


def _float(body: Mapping[str, Any], key: str) -> float:
    value = body.get(key, 0.0)
    _check(_is_finite_number(value), f"{key} {_shown(value)} is not a finite number")
    return float(value)
