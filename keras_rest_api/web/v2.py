"""The Open Inference Protocol (KServe v2) over HTTP/REST, beside /predict, on the same queue.

Follows the published specification: the KServe open-inference-protocol REST document, with
Triton's binary tensor data, classification and model repository (index) extensions. That is
what `tritonclient[http]`, KServe, MLServer and Triton clients speak.

The model's tensors:

- input `image`, BYTES [N]: N encoded image files (JPEG, PNG, ... as /predict accepts), a
  batch of N; or input `pixels`, UINT8 [N, H, W, 3] (or FP32 with values 0..255, which are
  rounded) for clients that resize themselves: RGB, the model's input size, as in the
  metadata. A request carries exactly one of them.
- output `probabilities`, FP32 [N, classes]; with `"parameters": {"classification": k}` it is
  BYTES [N, k] of "score:index:label", highest first.

A features model (models whose contract takes named features) takes instead either input
`features`, FP32 (or FP64) [N, F]: the F feature values of each instance in the contract's order
(a categorical feature as its vocabulary index), or one input per feature, named as the feature,
shape [N] or [N, 1]: FP32/FP64/INT32/INT64 for a numeric feature, BYTES for a categorical one (its
category); a feature with a default may be left out. Its output: `probabilities` [N, classes]
(classification), `probability` [N, 1] (of the positive class), or `values` [N, outputs]
(regression, in the contract's order). The metadata route lists them.

Every image of a request goes through what /predict does: validation and decoding
(imaging.decode_image), one job per image on the same Redis queue and batching, one deadline,
503 when the queue is full: the data plane (web.dataplane) does it for both. Errors are a non-200
status with `{"error": "..."}`, rendered by the one error table (web.errors).
"""
from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from keras_rest_api.errors import BadGateway, ModelNotFound, ProtocolError, RequestTooLarge, ServiceError, clip
from keras_rest_api.queue.records import ModelContract, Result
from keras_rest_api.web.dataplane import DataPlane
from keras_rest_api.web.features import rows_of
from keras_rest_api.web.limits import read_at_most

log = logging.getLogger("web.v2")

SERVER_NAME = "keras-rest-api"
SERVER_VERSION = "1.0.0"
EXTENSIONS = ["binary_tensor_data", "classification", "model_repository"]
IMAGE_INPUT, PIXELS_INPUT, OUTPUT = "image", "pixels", "probabilities"
FEATURES_INPUT = "features"
# A features model's output tensor, by its output kind.
FEATURES_OUTPUTS = {"classification": OUTPUT, "probability": "probability", "regression": "values"}
_NUMBER_TYPES = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8")}
# Images one request may carry: each becomes a job, and a request holds a web thread while all
# of them are classified.
MAX_BATCH = 64
_PIXEL_TYPES = {"UINT8": np.dtype("<u1"), "FP32": np.dtype("<f4")}
# The protocol's integer parameters and shape dimensions are int64.
INT64_MAX = 2**63 - 1
_LENGTH = struct.Struct("<I")  # BYTES elements in binary: a 4-byte little-endian length, then the bytes


def _plane() -> DataPlane:
    return current_app.extensions["dataplane"]


def served_models() -> list[ModelContract]:
    """Every model version the service can answer for right now (ready or draining on a live server)."""
    table = _plane().served.models()
    return [view.contract for name, versions in sorted(table.items())
            for _, view in sorted(versions.items(), key=lambda kv: int(kv[0])) if view.state != "loading"]


def find_model(name: str, version: str | None) -> ModelContract:
    """The model version the URL names (the newest ready one without a version); 404 naming what
    exists, 503 when no model server runs or the model is still loading."""
    try:
        return _plane().served.resolve(name, version)
    except ModelNotFound as exc:
        raise ModelNotFound(f"{exc} (POST /v2/repository/index lists every model and version).") from None


# --- health and metadata ----------------------------------------------------------------------

def server_metadata() -> Response:
    return jsonify(name=SERVER_NAME, version=SERVER_VERSION, extensions=EXTENSIONS)


def server_live() -> Response:
    return jsonify(live=True)


def server_ready() -> tuple[Response, int]:
    if served_models():
        return jsonify(ready=True), 200
    return jsonify(ready=False, error="No model server is running. Start run_model_server.py."), 503


def model_metadata(name: str, version: str | None) -> Response:
    model = find_model(name, version)
    if model.takes_features:
        return jsonify(
            name=model.name,
            versions=[m.version for m in served_models() if m.name == model.name],
            platform="keras_keras",
            inputs=[{"name": FEATURES_INPUT, "datatype": "FP32", "shape": [-1, len(model.features)]}] + [
                {"name": f.name, "datatype": "BYTES" if f.type == "categorical" else "FP32", "shape": [-1, 1]}
                for f in model.features],
            outputs=[{"name": output_name(model), "datatype": "FP32", "shape": [-1, model.classes]}],
            parameters={"feature_order": [f.name for f in model.features],
                        "categories": {f.name: list(f.vocabulary) for f in model.features if f.type == "categorical"},
                        "output_kind": model.output_kind,
                        "output_names": [o.name for o in model.outputs] or None},
        )
    return jsonify(
        name=model.name,
        versions=[m.version for m in served_models() if m.name == model.name],
        platform="keras_keras",
        inputs=[
            {"name": IMAGE_INPUT, "datatype": "BYTES", "shape": [-1]},
            {"name": PIXELS_INPUT, "datatype": "UINT8", "shape": [-1, model.input_height, model.input_width, 3]},
        ],
        outputs=[{"name": OUTPUT, "datatype": "FP32", "shape": [-1, model.classes]}],
    )


def model_ready(name: str, version: str | None) -> Response:
    model = find_model(name, version)
    return jsonify(name=model.name, ready=True)


# --- model repository extension -------------------------------------------------------------------

def repository_index() -> Response:
    plane = _plane()
    what = "The repository index request"
    length = _json_body_length(what)
    with plane.parsing(plane.parse_cost(length, length), _JSON_ADVICE):
        ready_only = _json_object(_read_json_body(what), what, allow_empty=True).get("ready", False)
    if not isinstance(ready_only, bool):
        raise ProtocolError(f"'ready' must be true or false, received {clip(ready_only)}.")
    table = _plane().served.models()
    listed = [{"name": name, "version": version, "state": _V2_STATES[view.state], "reason": ""}
              for name, versions in sorted(table.items())
              for version, view in sorted(versions.items(), key=lambda kv: int(kv[0]))]
    return jsonify([entry for entry in listed if entry["state"] == "READY" or not ready_only])


# The repository extension's states for this service's version states.
_V2_STATES = {"ready": "READY", "draining": "READY", "loading": "LOADING"}


def repository_load(name: str) -> Response:
    raise ProtocolError(f"Models are not loaded or unloaded through the API: model {clip(name)} is served while "
                        "a model server for it runs; a new version folder in the model repository is loaded "
                        "by the model servers on their own, and the version policy retires old ones.")


# --- inference ----------------------------------------------------------------------------------

@dataclass
class RequestedOutput:
    classification: int  # 0: the probabilities themselves
    binary: bool


@dataclass
class InferRequest:
    """What an inference request asks for, once parsed and validated: the parsed JSON is gone."""

    inputs: "InputTensor"
    outputs: list[RequestedOutput]
    timeout: float
    id: str | None
    files: list[bytes] | None  # encoded images still to decode, or
    pixels: list[np.ndarray] | None  # the pixels themselves


def output_name(model: ModelContract) -> str:
    """The name of `model`'s output tensor."""
    return FEATURES_OUTPUTS[model.output_kind] if model.takes_features else OUTPUT


def infer(name: str, version: str | None) -> Response:
    plane = _plane()
    model = find_model(name, version)
    if model.takes_features:
        return _infer_features(plane, model)
    parsed = _parse_infer(plane, model)
    # The parse's reservation is released: each image reserves its own decode cost.
    images = parsed.pixels if parsed.files is None else [_decode(data, n, model) for n, data in enumerate(parsed.files)]
    parsed.files = None
    top_k = max([output.classification for output in parsed.outputs] + [1])
    answers = plane.classify(model, images, top_k, parsed.timeout, g.request_id, full_output=True)
    if any(answer.probabilities is None or any(p.index is None for p in answer.predictions) for answer in answers):
        # A model server of an older version, which ignores full_output.
        raise BadGateway("The model server answered without the full output; upgrade it.")
    return _infer_response(parsed.id, model, parsed.outputs, answers)


def _parse_infer(plane: DataPlane, model: ModelContract) -> InferRequest:
    """The request read, parsed and validated while the decode budget holds what that may cost.

    The JSON part is capped (MAX_JSON_BYTES) from its declared length before any byte is read.
    """
    with plane.parsing(plane.parse_cost(*_declared_lengths()), _JSON_ADVICE):
        header, binary = _split_body()
        inputs, outputs = _tensors(header, model)
        batch = inputs.shape[0] if inputs.shape else 0
        if 1 <= batch <= _max_batch():
            plane.check_room(model, batch)
        timeout = _timeout(header.get("parameters") or {}, plane.request_timeout)
        files, pixels = _images(inputs, binary, model)
        request_id = header["id"] if isinstance(header.get("id"), str) else None
        inputs.data = None
        return InferRequest(inputs, outputs, timeout, request_id, files, pixels)


def _declared_lengths() -> tuple[int | None, int]:
    """The body's length and its JSON part's, as declared: 413 when the JSON part is over
    MAX_JSON_BYTES, before any byte is read."""
    if request.headers.get("Inference-Header-Content-Length") is None:  # all JSON
        length = _json_body_length("The inference request")
        return length, length
    return request.content_length, _declared_header_length()


_JSON_ADVICE = ("Send the tensors as binary tensor data (tritonclient's binary_data=True, with "
                "Inference-Header-Content-Length) rather than JSON, or fewer images per request.")


def _json_body_length(what: str) -> int:
    """The length of a body that is all JSON: as declared (413 past MAX_JSON_BYTES, before any
    byte is read), or MAX_JSON_BYTES for one streamed without Content-Length."""
    _refuse_json_over_cap(request.content_length, what)
    return request.content_length if request.content_length is not None else _plane().max_json_bytes


def _declared_header_length() -> int:
    """Inference-Header-Content-Length, 413 past MAX_JSON_BYTES (0 when malformed: the 400 comes later)."""
    try:
        length = int(request.headers.get("Inference-Header-Content-Length", ""))
    except ValueError:
        return 0
    _refuse_json_over_cap(length, "The inference request's JSON header")
    return max(0, length)


def _read_json_body(what: str) -> bytes:
    """A body that is all JSON, read up to MAX_JSON_BYTES (413 beyond: one streamed without
    Content-Length is cut there)."""
    limit = _plane().max_json_bytes
    data = read_at_most(limit + 1)
    if len(data) > limit:
        raise RequestTooLarge(f"{what} has more than {limit} bytes of JSON; this server parses at most {limit} "
                              f"(MAX_JSON_BYTES). {_JSON_ADVICE}")
    return data


def _refuse_json_over_cap(length: int | None, what: str) -> None:
    limit = _plane().max_json_bytes
    if length is not None and length > limit:
        raise RequestTooLarge(f"{what} has {length} bytes of JSON; this server parses at most {limit} "
                              f"(MAX_JSON_BYTES). {_JSON_ADVICE}")


def _infer_features(plane: DataPlane, model: ModelContract) -> Response:
    """A features model's request: its tensors checked as /predict checks instances, one job per
    row; read, parsed and checked while the decode budget holds what that may cost."""
    with plane.parsing(plane.parse_cost(*_declared_lengths()), _JSON_ADVICE):
        header, binary = _split_body()
        outputs = _outputs(header, model)
        if model.output_kind == "regression" and any(output.classification for output in outputs):
            raise ProtocolError(f"Model {model.name!r} is a regression model: the classification parameter does "
                                "not apply to its output 'values'.")
        rows = _feature_rows(header, binary, model)
        plane.check_room(model, len(rows))
        timeout = _timeout(header.get("parameters") or {}, plane.request_timeout)
        request_id = header["id"] if isinstance(header.get("id"), str) else None
        del header, binary
    top_k = max([output.classification for output in outputs] + [1])
    answers = plane.predict_rows(model, rows, top_k, timeout, g.request_id, full_output=True)
    if any(answer.probabilities is None for answer in answers):
        raise BadGateway("The model server answered without the full output; upgrade it.")
    return _infer_response(request_id, model, outputs, answers)


def _feature_rows(header: dict[str, Any], binary: bytes, model: ModelContract) -> list[np.ndarray]:
    inputs = header.get("inputs")
    names = [f.name for f in model.features]
    if not isinstance(inputs, list) or not inputs or not all(isinstance(t, dict) for t in inputs):
        raise ProtocolError(f"'inputs' must hold input {FEATURES_INPUT!r} (FP32 [N, {len(names)}], the features in "
                            f"order: {', '.join(names)[:300]}) or one input per feature, named as the feature.")
    tensors = _feature_tensors(inputs, binary)
    if len(tensors) == 1 and tensors[0][0] == FEATURES_INPUT and FEATURES_INPUT not in names:
        name, datatype, shape, values = tensors[0]
        if datatype not in ("FP32", "FP64") or len(shape) != 2 or shape[1] != len(names):
            raise ProtocolError(f"Input {FEATURES_INPUT!r} must be FP32 (or FP64) [N, {len(names)}]: each row the "
                                f"features in order ({', '.join(names)[:300]}); received {datatype} {shape}.")
        batch = shape[0]
        _check_batch(batch, shape)
        table = np.asarray(values, dtype=np.float64).reshape(batch, len(names))
        # A categorical column holds the category's index: give rows_of the category itself.
        instances = [{f.name: (_category(f, value) if f.type == "categorical" else value)
                      for f, value in zip(model.features, row.tolist())} for row in table]
        return rows_of(instances, model)
    batch = None
    columns: dict[str, list[Any]] = {}
    for name, datatype, shape, values in tensors:
        feature = next((f for f in model.features if f.name == name), None)
        if feature is None:
            raise ProtocolError(f"Unknown input {clip(name)}: model {model.name!r} takes {FEATURES_INPUT!r} or one input "
                                f"per feature: {', '.join(names)[:300]}.")
        wanted = ("BYTES",) if feature.type == "categorical" else tuple(_NUMBER_TYPES)
        if datatype not in wanted:
            raise ProtocolError(f"Input {clip(name)} must have datatype {' or '.join(wanted)}, received {clip(datatype)}.")
        if not shape or len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise ProtocolError(f"Input {clip(name)} must have shape [N] or [N, 1], one value per instance; "
                                f"received {shape}.")
        if batch is not None and shape[0] != batch:
            raise ProtocolError(f"Every input must have the same batch size: {clip(name)} has {shape[0]}, another "
                                f"{batch}.")
        batch = shape[0]
        _check_batch(batch, shape)
        if len(values) != batch:
            raise ProtocolError(f"Input {clip(name)} has shape {shape} but holds {len(values)} values.")
        columns[name] = values
    return rows_of([{name: column[i] for name, column in columns.items()} for i in range(batch or 0)], model)


def _category(feature: Any, value: float) -> Any:
    """The category a categorical column's index names (an index out of range stays a number: a field error)."""
    if value == int(value) and 0 <= value < len(feature.vocabulary):
        return feature.vocabulary[int(value)]
    return value


def _check_batch(batch: int, shape: list[int]) -> None:
    limit = _max_batch(current_app.config["MAX_INSTANCES"])
    if not 1 <= batch <= limit:
        raise ProtocolError(f"The first dimension is the batch, from 1 to {limit} instances; received shape {shape}.")


def _feature_tensors(inputs: list[dict[str, Any]], binary: bytes) -> list[tuple[str, str, list[int], list[Any]]]:
    """Each input's (name, datatype, shape, flat values), its binary data cut from `binary` in order."""
    tensors, offset = [], 0
    for tensor in inputs:
        name, datatype, shape = tensor.get("name"), tensor.get("datatype"), tensor.get("shape")
        if not isinstance(name, str) or datatype not in (*_NUMBER_TYPES, "BYTES"):
            raise ProtocolError(f"Each input needs a name and a datatype of {', '.join([*_NUMBER_TYPES, 'BYTES'])}; "
                                f"received name {clip(name)}, datatype {clip(datatype)}.")
        if (not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                                    for n in shape) or len(shape) > 2):
            raise ProtocolError(f"Input {clip(name)}: 'shape' must be a list of at most 2 non-negative integers, "
                                f"received {clip(shape)}.")
        parameters = tensor.get("parameters") or {}
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is None:
            if "data" not in tensor:
                raise ProtocolError(f"Input {clip(name)} has neither 'data' nor a binary_data_size parameter.")
            values = list(_flatten(tensor["data"]))
        else:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
                raise ProtocolError(f"Input {clip(name)}: binary_data_size {clip(size)} does not fit the {len(binary) - offset} "
                                    "bytes of binary data left after the JSON header.")
            chunk = binary[offset:offset + size]
            offset += size
            if datatype == "BYTES":
                values = [element.decode("utf-8", "replace") for element in _bytes_elements(chunk)]
            else:
                dtype = _NUMBER_TYPES[datatype]
                if len(chunk) % dtype.itemsize:
                    raise ProtocolError(f"Input {clip(name)}: {len(chunk)} bytes is not a whole number of {datatype}.")
                values = np.frombuffer(chunk, dtype=dtype).tolist()
        if datatype != "BYTES" and not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ProtocolError(f"Input {clip(name)} ({datatype}): 'data' must hold numbers only.")
        if int(np.prod(shape)) != len(values):
            raise ProtocolError(f"Input {clip(name)} has shape {shape} ({int(np.prod(shape))} values) but holds "
                                f"{len(values)}.")
        tensors.append((name, datatype, shape, values))
    if offset != len(binary):
        raise ProtocolError(f"{len(binary) - offset} bytes of binary data follow the inputs' binary_data_size.")
    names = [t[0] for t in tensors]
    if len(set(names)) != len(names):
        raise ProtocolError("An input is named twice; send each input once.")
    return tensors


def _max_batch(limit: int = MAX_BATCH) -> int:
    # A batch larger than the queue could never be queued whole.
    return min(limit, _plane().max_queue_length)


def _split_body() -> tuple[dict[str, Any], bytes]:
    """The JSON header and the binary tensor data after it (Inference-Header-Content-Length)."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding != "identity":
        raise ProtocolError(f"Content-Encoding {clip(encoding)} is not supported; send the request uncompressed.", 415)
    raw_length = request.headers.get("Inference-Header-Content-Length")
    if raw_length is None:
        return _json_object(_read_json_body("The inference request"), "The inference request"), b""
    body = request.get_data(cache=False)
    # A body streamed without Content-Length is cut at the limit rather than refused.
    if request.content_length is None and len(body) >= current_app.config["MAX_UPLOAD_BYTES"]:
        raise RequestEntityTooLarge()
    try:
        length = int(raw_length)
    except ValueError:
        length = -1
    if length == 0:
        raise ProtocolError("Inference-Header-Content-Length: 0 (a raw binary request without a JSON header) is "
                            "not supported: send the JSON inference request first, then the binary tensor data.")
    if not 0 < length <= len(body):
        raise ProtocolError(f"Inference-Header-Content-Length must be the length of the JSON header, from 1 to "
                            f"the body's {len(body)} bytes; received {clip(raw_length)}.")
    return _json_object(body[:length], "The inference request's JSON header"), body[length:]


def _json_object(data: bytes, what: str, allow_empty: bool = False) -> dict[str, Any]:
    if allow_empty and not data.strip():
        return {}
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ProtocolError(f"{what} is not valid JSON ({clip(str(exc), 120)}). Send a JSON object"
                            + (" (binary tensor data goes after it, with Inference-Header-Content-Length giving "
                               "its length)." if not allow_empty else ".")) from None
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} must be a JSON object, received {type(value).__name__}.")
    return value


@dataclass
class InputTensor:
    name: str
    datatype: str
    shape: list[int]
    data: Any  # JSON data, or None when binary
    binary_size: int | None


def _tensors(header: dict[str, Any], model: ModelContract) -> tuple[InputTensor, list[RequestedOutput]]:
    """The request's one input tensor and the outputs it asks for, validated."""
    inputs = header.get("inputs")
    expected = (f"exactly one input: {IMAGE_INPUT!r} (BYTES [N], encoded image files) or {PIXELS_INPUT!r} "
                f"(UINT8 or FP32 [N, {model.input_height}, {model.input_width}, 3], RGB values 0..255)")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        count = len(inputs) if isinstance(inputs, list) else "no list of"
        raise ProtocolError(f"'inputs' must hold {expected}; received {count} inputs.")
    tensor = inputs[0]
    name, datatype, shape = tensor.get("name"), tensor.get("datatype"), tensor.get("shape")
    if name not in (IMAGE_INPUT, PIXELS_INPUT):
        raise ProtocolError(f"Unknown input {clip(name)}. Send {expected}.")
    allowed = ("BYTES",) if name == IMAGE_INPUT else tuple(_PIXEL_TYPES)
    if datatype not in allowed:
        raise ProtocolError(f"Input {name!r} must have datatype {' or '.join(allowed)}, received {clip(datatype)}.")
    if not isinstance(shape, list) or not all(_is_int64(n) and n >= 0 for n in shape):
        raise ProtocolError(f"Input {name!r}: 'shape' must be a list of non-negative integers (int64), "
                            f"received {clip(shape)}.")
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ProtocolError(f"Input {name!r}: 'parameters' must be an object.")
    if "shared_memory_region" in parameters:
        raise ProtocolError("Shared-memory tensors are not supported: send the data in the request.")
    binary_size = parameters.get("binary_data_size")
    if binary_size is not None and (not _is_int64(binary_size) or binary_size < 0):
        raise ProtocolError(f"Input {name!r}: binary_data_size must be a non-negative integer (int64), "
                            f"received {clip(binary_size)}.")
    if binary_size is None and "data" not in tensor:
        raise ProtocolError(f"Input {name!r} has neither 'data' nor a binary_data_size parameter.")
    return InputTensor(name, datatype, shape, tensor.get("data"), binary_size), _outputs(header, model)


def _outputs(header: dict[str, Any], model: ModelContract) -> list[RequestedOutput]:
    parameters = header.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ProtocolError("The request's 'parameters' must be an object.")
    binary_default = parameters.get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise ProtocolError(f"binary_data_output must be true or false, received {clip(binary_default)}.")
    requested = header.get("outputs")
    if not requested:  # none named: every output, with the default settings
        return [RequestedOutput(0, binary_default)]
    if not isinstance(requested, list):
        raise ProtocolError("'outputs' must be a list of requested outputs.")
    outputs = []
    expected = output_name(model)
    for item in requested:
        name = item.get("name") if isinstance(item, dict) else None
        if name != expected:
            raise ProtocolError(f"Unknown output {clip(name)}: this model has one output, {expected!r}.")
        options = item.get("parameters") or {}
        if not isinstance(options, dict):
            raise ProtocolError(f"Output {expected!r}: 'parameters' must be an object.")
        if "shared_memory_region" in options:
            raise ProtocolError("Shared-memory outputs are not supported: ask for the data in the response.")
        count = options.get("classification", 0)
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= model.classes:
            raise ProtocolError(f"classification must be an integer from 1 to the model's {model.classes} "
                                f"classes, received {clip(count)}.")
        binary = options.get("binary_data", binary_default)
        if not isinstance(binary, bool):
            raise ProtocolError(f"binary_data must be true or false, received {clip(binary)}.")
        outputs.append(RequestedOutput(count, binary))
    return outputs


def _timeout(parameters: dict[str, Any], limit: float) -> float:
    """The request's deadline in seconds: REQUEST_TIMEOUT, or the client's shorter `timeout` (microseconds)."""
    requested = parameters.get("timeout") if isinstance(parameters, dict) else None
    if requested is None:
        return limit
    if not _is_int64(requested) or requested <= 0:
        raise ProtocolError(f"The 'timeout' parameter must be a positive number of microseconds (an int64, at most "
                            f"{INT64_MAX}), received {clip(requested)}. The service waits at most {limit:g} s.")
    return min(limit, requested / 1e6)


def _is_int64(value: Any) -> bool:
    """Whether `value` is a JSON integer the protocol's int64 parameters and shapes can hold."""
    return isinstance(value, int) and not isinstance(value, bool) and -INT64_MAX - 1 <= value <= INT64_MAX


def _images(tensor: InputTensor, binary: bytes,
            model: ModelContract) -> tuple[list[bytes] | None, list[np.ndarray] | None]:
    """The input's encoded image files (to decode as /predict decodes uploads), or its uint8
    (H, W, 3) pixel arrays, one per image, checked."""
    if tensor.binary_size is not None and tensor.binary_size != len(binary):
        raise ProtocolError(f"Input {tensor.name!r} declares binary_data_size {clip(tensor.binary_size)} but "
                            f"{len(binary)} bytes follow the JSON header.")
    if tensor.binary_size is None and binary:
        raise ProtocolError(f"{len(binary)} bytes follow the JSON header but no input has a binary_data_size.")
    shape = tensor.shape
    batch = shape[0] if shape else 0
    if tensor.name == IMAGE_INPUT and (not shape or any(n != 1 for n in shape[1:])):
        raise ProtocolError(f"Input {IMAGE_INPUT!r} must have shape [N] (or [N, 1]): one encoded image "
                            f"file per element; received {clip(shape)}.")
    expected = [batch, model.input_height, model.input_width, 3]
    if tensor.name == PIXELS_INPUT and shape != expected:
        raise ProtocolError(f"Input {PIXELS_INPUT!r} must have shape [N, {model.input_height}, {model.input_width}, 3] "
                            f"(RGB at the model's input size), received {clip(shape)}. Resize the images, or send the "
                            f"encoded files as input {IMAGE_INPUT!r} (BYTES) instead.")
    if not 1 <= batch <= _max_batch():
        raise ProtocolError(f"Input {tensor.name!r}: the first dimension is the batch, from 1 to {_max_batch()} "
                            f"images; received shape {clip(shape)}.")
    if tensor.name == IMAGE_INPUT:
        files = list(_bytes_elements(binary)) if tensor.binary_size is not None else _json_bytes(tensor.data)
        if len(files) != batch:
            raise ProtocolError(f"Input {IMAGE_INPUT!r} has shape {clip(shape)} but holds {len(files)} elements.")
        return files, None
    return None, list(_pixels(tensor, binary, expected))


def _bytes_elements(data: bytes) -> Iterator[bytes]:
    offset = 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise ProtocolError("The BYTES tensor data ends inside an element's 4-byte length prefix.")
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += 4
        if offset + length > len(data):
            raise ProtocolError(f"A BYTES element announces {length} bytes but only {len(data) - offset} remain. "
                                "Each element is a 4-byte little-endian length, then that many bytes.")
        yield data[offset:offset + length]
        offset += length


def _json_bytes(data: Any) -> list[bytes]:
    elements = list(_flatten(data))
    if not all(isinstance(element, str) for element in elements):
        raise ProtocolError(f"Input {IMAGE_INPUT!r} in JSON must be a list of strings; image files are binary, so "
                            "send them with the binary tensor data extension (tritonclient's default).")
    return [element.encode("utf-8", "surrogatepass") for element in elements]


def _flatten(data: Any, depth: int = 0) -> Iterator[Any]:
    if not isinstance(data, list):
        raise ProtocolError(f"Tensor 'data' must be a JSON array, received {type(data).__name__}.")
    if depth > 8:  # tensors here have at most 4 dimensions; deeper nesting is not a tensor
        raise ProtocolError("Tensor 'data' is nested deeper than its shape allows.")
    for element in data:
        if isinstance(element, list):
            yield from _flatten(element, depth + 1)
        else:
            yield element


def _decode(data: bytes, index: int, model: ModelContract) -> np.ndarray:
    try:
        # Its geometry, under the process's decode budget as /predict: a refusal is a 413, or a
        # 503 with Retry-After.
        return _plane().decode(data, model)
    except ServiceError as exc:
        # The same message and status as /predict, naming the element.
        renamed = type(exc)(f"Input {IMAGE_INPUT!r}, element {index}: {exc}")
        renamed.__dict__.update(exc.__dict__)  # e.g. the budget's Retry-After
        raise renamed from None


def _pixels(tensor: InputTensor, binary: bytes, shape: list[int]) -> np.ndarray:
    count = int(np.prod(shape))
    if tensor.binary_size is not None:
        dtype = _PIXEL_TYPES[tensor.datatype]
        if len(binary) != count * dtype.itemsize:
            raise ProtocolError(f"Input {PIXELS_INPUT!r} {tensor.datatype} {clip(shape)} is {count * dtype.itemsize} bytes, "
                                f"received {len(binary)}.")
        values = np.frombuffer(binary, dtype=dtype)
        if tensor.datatype == "UINT8":
            return values.reshape(shape)
        values = values.astype(np.float64)
    else:
        try:
            values = np.asarray(tensor.data, dtype=np.float64).ravel()
        except (ValueError, TypeError, OverflowError):  # OverflowError: an integer beyond any float
            raise ProtocolError(f"Input {PIXELS_INPUT!r}: 'data' must be an array of numbers from 0 to 255 "
                                "(nested or flat).") from None
        if values.size != count:
            raise ProtocolError(f"Input {PIXELS_INPUT!r} has shape {clip(shape)} ({count} values) but 'data' holds {values.size}.")
    if not np.all(np.isfinite(values)) or values.min() < 0 or values.max() > 255:
        raise ProtocolError(f"Input {PIXELS_INPUT!r}: pixel values must be RGB from 0 to 255 (not scaled to 0..1 "
                            f"or normalised); received values from {np.nanmin(values):g} to {np.nanmax(values):g}.")
    if tensor.datatype == "UINT8" and not np.array_equal(values, np.floor(values)):
        raise ProtocolError(f"Input {PIXELS_INPUT!r} is UINT8 but holds non-integer values.")
    # FP32 is rounded to the queue's uint8 pixels: the model server takes uint8 RGB.
    return np.rint(values).astype(np.uint8).reshape(shape)


def _infer_response(request_id: str | None, model: ModelContract, outputs: Sequence[RequestedOutput],
                    answers: Sequence[Result]) -> Response:
    batch = len(answers)
    blobs: list[bytes] = []
    described = []
    for output in outputs:
        if output.classification:
            k = output.classification
            elements = [f"{p.probability}:{p.index}:{p.label}" for answer in answers for p in answer.predictions[:k]]
            tensor: dict[str, Any] = {"name": output_name(model), "datatype": "BYTES", "shape": [batch, k]}
            if output.binary:
                blob = b"".join(_LENGTH.pack(len(e)) + e for e in (element.encode() for element in elements))
            else:
                tensor["data"] = elements
        else:
            probabilities = np.asarray([answer.probabilities for answer in answers], dtype=np.float32)
            tensor = {"name": output_name(model), "datatype": "FP32", "shape": list(probabilities.shape)}
            if output.binary:
                blob = probabilities.astype("<f4").tobytes()
            else:
                tensor["data"] = probabilities.ravel().tolist()
        if output.binary:
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        described.append(tensor)
    body: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if request_id is not None:
        body["id"] = request_id
    body["outputs"] = described
    encoded = json.dumps(body, separators=(",", ":")).encode()
    if not blobs:
        return Response(encoded, mimetype="application/json")
    response = Response(encoded + b"".join(blobs), mimetype="application/octet-stream")
    response.headers["Inference-Header-Content-Length"] = str(len(encoded))
    return response


def register(app: Flask, plane: DataPlane) -> None:
    """Add the /v2 routes to `app`, over `plane` (errors: web.errors renders them as {"error": ...})."""
    app.extensions["dataplane"] = plane
    blueprint = Blueprint("v2", __name__, url_prefix="/v2")
    routes: list[tuple[str, str, Callable[..., Any], dict[str, Any] | None]] = [
        ("GET", "", server_metadata, None),
        ("GET", "/health/live", server_live, None),
        ("GET", "/health/ready", server_ready, None),
        ("GET", "/models/<name>", model_metadata, {"version": None}),
        ("GET", "/models/<name>/versions/<version>", model_metadata, None),
        ("GET", "/models/<name>/ready", model_ready, {"version": None}),
        ("GET", "/models/<name>/versions/<version>/ready", model_ready, None),
        ("POST", "/models/<name>/infer", infer, {"version": None}),
        ("POST", "/models/<name>/versions/<version>/infer", infer, None),
        ("POST", "/repository/index", repository_index, None),
        ("POST", "/repository/models/<name>/load", repository_load, None),
        ("POST", "/repository/models/<name>/unload", repository_load, None),
    ]
    for number, (method, rule, view, defaults) in enumerate(routes):
        blueprint.add_url_rule(rule, endpoint=f"{view.__name__}_{number}", view_func=view, methods=[method],
                               **({"defaults": defaults} if defaults else {}))
    app.register_blueprint(blueprint)
