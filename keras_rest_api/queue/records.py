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

from keras_rest_api.errors import clip

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
# A features model's contract: its features, each categorical one's vocabulary, its named outputs.
MAX_FEATURES = 1024
MAX_VOCABULARY = 1000
MAX_NAME = 64

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
    # A features model's job: one row of float64 values in its contract's feature order (a
    # categorical feature as its vocabulary index); `pixels` is then empty.
    features: np.ndarray | None = None

    def to_redis(self) -> dict[str, bytes]:
        """Stream fields for this job; the pixels (or the feature row) go as raw bytes."""
        if self.features is not None:
            return self._features_to_redis()
        pixels = np.ascontiguousarray(self.pixels, dtype=np.uint8)
        if pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ValueError(f"expected pixels of shape (height, width, 3), received {pixels.shape}")
        height, width, _ = pixels.shape
        return {**self._shared_fields(), "shape": f"{height},{width}".encode(), "pixels": pixels.tobytes()}

    def _features_to_redis(self) -> dict[str, bytes]:
        row = np.ascontiguousarray(self.features, dtype="<f8")
        if row.ndim != 1 or not 1 <= row.size <= MAX_FEATURES:
            raise ValueError(f"expected one row of 1..{MAX_FEATURES} feature values, received shape {row.shape}")
        return {**self._shared_fields(), "kind": FEATURES_JOB, "features": row.tobytes()}

    def _shared_fields(self) -> dict[str, bytes]:
        """The fields every kind of job carries (read back by _shared_job_fields)."""
        return {
            "v": WIRE_VERSION,
            "id": self.id.encode(),
            "top_k": str(self.top_k).encode(),
            "deadline": repr(self.deadline).encode(),
            "enqueued_at": repr(self.enqueued_at).encode(),
            "later": b"1" if self.fetch_later else b"0",
            "full": b"1" if self.full_output else b"0",
            "rid": self.request_id.encode(),
        }

    @classmethod
    @_record_errors_only("job")
    def from_redis(cls, fields: Mapping[bytes, bytes]) -> "Job":
        """The job in a stream entry's fields; RecordError if they are not a valid job."""
        if fields.get(b"kind") == FEATURES_JOB:
            return _features_job(cls, fields)
        shared = _shared_job_fields(fields, "job")
        try:
            height, width = (int(n) for n in fields[b"shape"].split(b","))
            data = fields[b"pixels"]
        except (KeyError, ValueError) as exc:
            raise RecordError(f"malformed job entry: {type(exc).__name__}: {clip(str(exc))}") from None
        _check(1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE,
               f"image shape {height}x{width} outside 1..{MAX_SIDE}")
        _check(len(data) == height * width * 3,
               f"{len(data)} pixel bytes for a {height}x{width}x3 image ({height * width * 3} expected)")
        return cls(pixels=np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3), **shared)


FEATURES_JOB = b"features"
# A features job carries no pixels: its `pixels` is this empty image.
NO_PIXELS = np.zeros((0, 0, 3), dtype=np.uint8)


def _features_job(cls: type[Job], fields: Mapping[bytes, bytes]) -> Job:
    """A features job's fields: the shared ones as an image job's, and a row of finite float64s."""
    shared = _shared_job_fields(fields, "features job")
    try:
        data = fields[b"features"]
    except KeyError as exc:
        raise RecordError(f"malformed features job entry: KeyError: {clip(str(exc))}") from None
    _check(isinstance(data, (bytes, bytearray)) and len(data) % 8 == 0 and 8 <= len(data) <= 8 * MAX_FEATURES,
           f"feature row of {len(data)} bytes: expected 1..{MAX_FEATURES} float64 values")
    row = np.frombuffer(data, dtype="<f8")
    _check(bool(np.all(np.isfinite(row))), "feature row holds a value that is not finite")
    return cls(pixels=NO_PIXELS, features=row.astype(np.float64, copy=False), **shared)


def _shared_job_fields(fields: Mapping[bytes, bytes], what: str) -> dict[str, Any]:
    """The fields every kind of job carries, parsed and checked, as Job's keyword arguments."""
    try:
        _check(fields[b"v"] == WIRE_VERSION, f"wire version {clip(fields[b'v'])}, expected {WIRE_VERSION!r}")
        job_id = fields[b"id"].decode("ascii")
        request_id = fields.get(b"rid", b"").decode("ascii")
        top_k = int(fields[b"top_k"])
        deadline = float(fields[b"deadline"])
        enqueued_at = float(fields[b"enqueued_at"])
    except RecordError:
        raise
    except (KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise RecordError(f"malformed {what} entry: {type(exc).__name__}: {clip(str(exc))}") from None
    _check(is_valid_id(job_id), f"job id {clip(job_id)} is not 1-64 of [A-Za-z0-9._-]")
    _check(request_id == "" or is_valid_id(request_id), "request id is not 1-64 of [A-Za-z0-9._-]")
    _check(1 <= top_k <= MAX_TOP_K, f"top_k {top_k} outside 1..{MAX_TOP_K}")
    _check(math.isfinite(deadline) and math.isfinite(enqueued_at), "deadline or enqueue time not finite")
    return {"id": job_id, "request_id": request_id, "top_k": top_k, "deadline": deadline,
            "enqueued_at": enqueued_at, "fetch_later": fields.get(b"later") == b"1",
            "full_output": fields.get(b"full") == b"1"}


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
    # A regression model's answer: its contract's outputs, each named with its value and unit.
    values: list[NamedValue] | None = None

    @classmethod
    def ok(cls, predictions: Sequence[Prediction], timing: Mapping[str, float],
           probabilities: Sequence[float] | None = None, model: str = "", version: str = "",
           values: Sequence[NamedValue] | None = None) -> "Result":
        return cls(True, list(predictions), timing=dict(timing),
                   probabilities=None if probabilities is None else [float(p) for p in probabilities],
                   model=model, version=version, values=None if values is None else list(values))

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
            if self.values is not None:
                body["values"] = [v.as_json() for v in self.values]
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
                   f"error status {clip(status)} not one of {sorted(RESULT_STATUSES)}")
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
        values = body.get("values")
        if values is not None:
            _check(isinstance(values, list) and len(values) <= MAX_CLASSES, "values is not a list")
            values = [_named_value(item) for item in values]
        return cls(True, predictions, timing=timing, probabilities=probabilities, model=model, version=version,
                   values=values)

    def answer_json(self) -> list[dict[str, Any]]:
        """This answer's predictions as a response lists them: labelled scores, or named values."""
        if self.values is not None:
            return [v.as_json() for v in self.values]
        return [p.as_json() for p in self.predictions]

    def as_response(self) -> dict[str, Any]:
        """The tutorial's JSON body for this result, labelled with the model version that produced it."""
        if self.success:
            body: dict[str, Any] = {"success": True, "predictions": self.answer_json()}
            if self.model:
                body.update(model=self.model, version=self.version)
            return body
        return {"success": False, "error": self.error}


@dataclass(frozen=True)
class NamedValue:
    """One output of a regression model: its name, value and unit."""

    name: str
    value: float
    unit: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "unit": self.unit}


def _named_value(item: Any) -> NamedValue:
    _check(isinstance(item, dict), "a value is not an object")
    name, value, unit = item.get("name"), item.get("value"), item.get("unit", "")
    _check(isinstance(name, str) and len(name) <= MAX_TEXT, "a value's name is not a short string")
    _check(_is_finite_number(value), "a value is not a finite number")
    _check(isinstance(unit, str) and len(unit) <= MAX_TEXT, "a value's unit is not a short string")
    return NamedValue(name, float(value), unit)


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
INPUT_KINDS = ("image", "features")
OUTPUT_KINDS = ("classification", "probability", "regression")
FEATURE_TYPES = ("numeric", "categorical")
FEATURE_NORMALIZATIONS = ("none", "mean_std", "min_max")
UNKNOWN_CATEGORY = ("error", "bucket")
_FEATURE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


def is_valid_feature_name(value: str) -> bool:
    """Whether `value` may name a feature or an output: a JSON key, a v2 input name, a form field."""
    return isinstance(value, str) and _FEATURE_NAME.fullmatch(value) is not None


@dataclass(frozen=True)
class FeatureSpec:
    """One named input of a features model, in its contract's order.

    numeric: a finite number, accepted within [low, high] (None: unbounded), normalised for the
    model by "mean_std" ((x - mean) / std) or "min_max" ((x - min) / (max - min)).
    categorical: a string of `vocabulary`, one-hot encoded for the model; an unknown value is
    refused ("error") or goes to one extra "bucket" column. On the queue a categorical value is
    its vocabulary index (len(vocabulary) for the bucket). `default` (None: required) stands in
    for a value the request leaves out.
    """

    name: str
    type: str = "numeric"
    default: float | str | None = None
    normalization: str = "none"
    mean: float = 0.0
    std: float = 1.0
    min: float = 0.0
    max: float = 1.0
    low: float | None = None
    high: float | None = None
    vocabulary: tuple[str, ...] = ()
    unknown: str = "error"
    unit: str = ""

    @property
    def required(self) -> bool:
        return self.default is None

    @property
    def width(self) -> int:
        """Columns this feature takes in the model's input."""
        return 1 if self.type == "numeric" else len(self.vocabulary) + (self.unknown == "bucket")

    def as_json(self) -> dict[str, Any]:
        body = dataclass_as_dict(self)
        body["vocabulary"] = list(self.vocabulary)
        return body

    @classmethod
    def from_json(cls, body: Any) -> "FeatureSpec":
        _check(isinstance(body, dict), "a feature is not an object")
        unknown = set(body) - set(cls.__dataclass_fields__)
        _check(not unknown, f"feature has unknown fields {sorted(unknown)[:5]}")
        values = dict(body)
        if "vocabulary" in values:
            _check(isinstance(values["vocabulary"], list), "a feature's vocabulary is not a list")
            values["vocabulary"] = tuple(values["vocabulary"])
        try:
            return cls(**values)
        except TypeError as exc:
            raise RecordError(f"feature incomplete: {exc}") from None

    def problem(self, value: float) -> str:
        """Why the queued `value` (a number, or a category index) is not one this feature takes; "" if it is."""
        if not math.isfinite(value):
            return "is not a finite number"
        if self.type == "categorical":
            if value != int(value) or not 0 <= value < self.width:
                return f"category index {value:g} is outside 0..{self.width - 1}"
            return ""
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            return f"{value:g} is outside {_bounds(self)}"
        return ""


@dataclass(frozen=True)
class OutputSpec:
    """One named value a regression model answers, with its unit."""

    name: str
    unit: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "unit": self.unit}

    @classmethod
    def from_json(cls, body: Any) -> "OutputSpec":
        _check(isinstance(body, dict) and set(body) <= {"name", "unit"}, "an output is not {name, unit}")
        try:
            return cls(**body)
        except TypeError as exc:
            raise RecordError(f"output incomplete: {exc}") from None


def _bounds(feature: FeatureSpec) -> str:
    low = "-inf" if feature.low is None else f"{feature.low:g}"
    high = "+inf" if feature.high is None else f"{feature.high:g}"
    return f"the accepted range [{low}, {high}]"


def feature_row_problem(contract: "ModelContract", row: np.ndarray) -> str:
    """Why a queued feature row does not fit `contract` (checked again by the model server); "" if it does."""
    if row.shape != (len(contract.features),):
        return f"the row has {row.size} values but model {contract.name} takes {len(contract.features)} features"
    for feature, value in zip(contract.features, row.tolist()):
        problem = feature.problem(value)
        if problem:
            return f"feature {feature.name!r}: {problem}"
    return ""


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
    # "image" (the fields above), or "features": a JSON object of the named `features`, in order
    # (the geometry fields are then unused, 1x1). What the model answers: "classification"
    # (`classes` labelled scores, top_k), "probability" (one score: that of `positive_label`),
    # or "regression" (the `outputs`, one value each).
    input_kind: str = "image"
    features: tuple[FeatureSpec, ...] = ()
    output_kind: str = "classification"
    outputs: tuple[OutputSpec, ...] = ()
    positive_label: str = ""

    def __post_init__(self) -> None:
        _validate_contract(self)
        # Every contract, image models' too: a forged record must not pass an unknown input kind
        # or features on an image model.
        _validate_features_contract(self)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.input_height, self.input_width

    @property
    def takes_features(self) -> bool:
        return self.input_kind == "features"

    def as_json(self) -> dict[str, Any]:
        body = dataclass_as_dict(self)
        body["mean"], body["std"] = list(self.mean), list(self.std)
        if not self.takes_features and self.output_kind == "classification":
            # An image model's record stays what it was, for web tiers that predate features models.
            for key in ("input_kind", "features", "output_kind", "outputs", "positive_label"):
                del body[key]
            return body
        body["features"] = [f.as_json() for f in self.features]
        body["outputs"] = [o.as_json() for o in self.outputs]
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
        if "features" in values:
            _check(isinstance(values["features"], list) and len(values["features"]) <= MAX_FEATURES,
                   f"features is not a list of at most {MAX_FEATURES}")
            values["features"] = tuple(FeatureSpec.from_json(f) for f in values["features"])
        if "outputs" in values:
            _check(isinstance(values["outputs"], list) and len(values["outputs"]) <= MAX_CLASSES,
                   "outputs is not a list")
            values["outputs"] = tuple(OutputSpec.from_json(o) for o in values["outputs"])
        try:
            return cls(**values)
        except TypeError as exc:
            raise RecordError(f"model contract incomplete: {exc}") from None


def dataclass_as_dict(value: Any) -> dict[str, Any]:
    return {name: getattr(value, name) for name in value.__dataclass_fields__}


def _validate_contract(c: ModelContract) -> None:
    _check(is_valid_model_name(c.name), f"model name {clip(c.name)} is not 1-64 of [A-Za-z0-9_.-]")
    _check(is_valid_version(c.version), f"version {clip(c.version)} is not a number of up to 9 digits")
    for key, low, high in (("input_height", 1, MAX_SIDE), ("input_width", 1, MAX_SIDE), ("classes", 1, MAX_CLASSES),
                           ("pad_value", 0, 255), ("max_batch_size", 1, MAX_BATCH_SIZE), ("max_wait_ms", 0, 60_000)):
        value = getattr(c, key)
        _check(isinstance(value, int) and not isinstance(value, bool) and low <= value <= high,
               f"{key} {clip(value)} is not an integer in {low}..{high}")
    _check(c.resize in RESIZE_POLICIES, f"resize {clip(c.resize)} is not one of {', '.join(RESIZE_POLICIES)}")
    _check(c.interpolation in INTERPOLATIONS,
           f"interpolation {clip(c.interpolation)} is not one of {', '.join(INTERPOLATIONS)}")
    _check(c.normalization in NORMALIZATIONS,
           f"normalization {clip(c.normalization)} is not one of {', '.join(NORMALIZATIONS)}")
    _check(c.channel_order in CHANNEL_ORDERS, f"channel_order {clip(c.channel_order)} is not RGB or BGR")
    _check(_is_finite_number(c.crop_fraction) and 0.05 <= c.crop_fraction <= 1.0,
           f"crop_fraction {clip(c.crop_fraction)} is not a number in 0.05..1")
    _check(all(_is_finite_number(v) for v in (*c.mean, *c.std)) and all(v != 0 for v in c.std),
           "mean and std must be finite numbers, std non-zero")
    _check(isinstance(c.precision, str) and len(c.precision) <= 32, "precision is not a short string")


def _validate_features_contract(c: ModelContract) -> None:
    _check(c.input_kind in INPUT_KINDS, f"input kind {c.input_kind!r} is not one of {', '.join(INPUT_KINDS)}")
    _check(c.output_kind in OUTPUT_KINDS, f"output kind {c.output_kind!r} is not one of {', '.join(OUTPUT_KINDS)}")
    if c.input_kind == "features":
        _check(isinstance(c.features, tuple) and 1 <= len(c.features) <= MAX_FEATURES,
               f"a features model needs 1..{MAX_FEATURES} features")
        for feature in c.features:
            _check(isinstance(feature, FeatureSpec), "a feature is not a FeatureSpec")
            _validate_feature(feature)
        names = [f.name for f in c.features]
        _check(len(set(names)) == len(names), "feature names repeat")
    else:
        _check(not c.features, "an image model declares no features")
    if c.output_kind == "regression":
        _check(isinstance(c.outputs, tuple) and len(c.outputs) == c.classes,
               f"a regression model of {c.classes} outputs must name {c.classes} outputs")
        for output in c.outputs:
            _check(isinstance(output, OutputSpec) and is_valid_feature_name(output.name)
                   and isinstance(output.unit, str) and len(output.unit) <= MAX_NAME,
                   "an output's name is not 1-64 of [A-Za-z0-9_.-] or its unit is not a short string")
        _check(len({o.name for o in c.outputs}) == len(c.outputs), "output names repeat")
    else:
        _check(not c.outputs, "only a regression model names outputs")
    if c.output_kind == "probability":
        _check(c.classes == 1, f"a probability model has one output, not {c.classes}")
        _check(isinstance(c.positive_label, str) and 1 <= len(c.positive_label) <= MAX_TEXT,
               "a probability model needs a positive_label")


def _validate_feature(f: FeatureSpec) -> None:
    _check(is_valid_feature_name(f.name), f"feature name {str(f.name)[:80]!r} is not 1-64 of [A-Za-z0-9_.-] "
                                          "starting with a letter or _")
    _check(f.type in FEATURE_TYPES, f"feature {f.name}: type {f.type!r} is not numeric or categorical")
    _check(isinstance(f.unit, str) and len(f.unit) <= MAX_NAME, f"feature {f.name}: unit is not a short string")
    if f.type == "numeric":
        _check(f.normalization in FEATURE_NORMALIZATIONS,
               f"feature {f.name}: normalization {f.normalization!r} is not one of {', '.join(FEATURE_NORMALIZATIONS)}")
        numbers = [f.mean, f.std, f.min, f.max] + [v for v in (f.low, f.high) if v is not None]
        _check(all(_is_finite_number(v) for v in numbers), f"feature {f.name}: a bound or statistic is not finite")
        _check(f.std > 0, f"feature {f.name}: std must be > 0")
        _check(f.max > f.min, f"feature {f.name}: max must be > min")
        _check(f.low is None or f.high is None or f.low <= f.high, f"feature {f.name}: low must be <= high")
        _check(not f.vocabulary, f"feature {f.name}: a numeric feature has no vocabulary")
        _check(f.default is None or (_is_finite_number(f.default) and not f.problem(float(f.default))),
               f"feature {f.name}: default must be a finite number in its range")
    else:
        _check(isinstance(f.vocabulary, tuple) and 1 <= len(f.vocabulary) <= MAX_VOCABULARY,
               f"feature {f.name}: a vocabulary of 1..{MAX_VOCABULARY} values")
        _check(all(isinstance(v, str) and 1 <= len(v) <= MAX_NAME for v in f.vocabulary),
               f"feature {f.name}: vocabulary values must be strings of 1..{MAX_NAME} characters")
        _check(len(set(f.vocabulary)) == len(f.vocabulary), f"feature {f.name}: vocabulary values repeat")
        _check(f.unknown in UNKNOWN_CATEGORY, f"feature {f.name}: unknown must be error or bucket")
        _check(f.default is None or f.default in f.vocabulary,
               f"feature {f.name}: default must be one of its vocabulary")


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
           f"{key} {clip(value)} is not an integer in {low}..{high}")
    return value


def _float(body: Mapping[str, Any], key: str) -> float:
    value = body.get(key, 0.0)
    _check(_is_finite_number(value), f"{key} {clip(value)} is not a finite number")
    return float(value)
