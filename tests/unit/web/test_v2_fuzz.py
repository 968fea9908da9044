"""Property-based fuzzing of the Open Inference Protocol's request parser (web.v2): whatever a
client sends, the parser answers with a typed error of keras_rest_api.errors (a 4xx, or a 503
for a full queue or budget), never anything else, and no message grows with what was sent."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from keras_rest_api.errors import ServiceError
from keras_rest_api.web import v2
from keras_rest_api.web.app import create_app
from tests.support.web_fixtures import heartbeat_of

# Past int64, past any float; long strings.
LONG = (st.text(min_size=200, max_size=400) | st.sampled_from([2**63, -2**63 - 1, 2**64, 10**400, -10**400])
        | st.integers(min_value=10**30, max_value=10**400))
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=12) | LONG)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                         max_size=4), max_leaves=20)
# One image's worth of pixel values (the tiny model's 32 x 32 x 3), one of them anything at all.
PIXEL_VALUES = st.tuples(SCALARS, st.integers(0, 3071)).map(lambda drawn: [0] * drawn[1] + [drawn[0]] + [0] * (3071 - drawn[1]))
DIMENSIONS = st.integers(min_value=-2, max_value=2**70) | JSON
TENSOR = st.fixed_dictionaries(
    {"name": st.sampled_from(["image", "pixels"]) | JSON,
     "datatype": st.sampled_from(["BYTES", "UINT8", "FP32", "INT64"]) | JSON,
     "shape": st.lists(DIMENSIONS, max_size=5) | st.sampled_from([[1], [1, 32, 32, 3], [2, 32, 32, 3]]) | JSON},
    optional={"data": JSON | PIXEL_VALUES | st.lists(st.text(max_size=8), max_size=3),
              "parameters": st.dictionaries(st.sampled_from(["binary_data_size", "shared_memory_region"]),
                                            st.integers() | JSON, max_size=2) | JSON})
OUTPUT = st.fixed_dictionaries({"name": st.sampled_from(["probabilities"]) | JSON}, optional={
    "parameters": st.dictionaries(st.sampled_from(["classification", "binary_data"]), st.integers() | JSON) | JSON})
HEADER = st.fixed_dictionaries({}, optional={
    "inputs": st.lists(TENSOR, max_size=2) | JSON,
    "outputs": st.lists(OUTPUT, max_size=2) | JSON,
    "parameters": st.dictionaries(st.sampled_from(["timeout", "binary_data_output", "classification"]),
                                  st.integers() | JSON, max_size=3) | JSON,
    "id": JSON})
# Header values as HTTP can carry them (printable ASCII, no line breaks).
# A valid request with one field (or one pixel value) replaced by anything: the deep paths of
# the parser (pixel values, sizes, parameters) are reached in every example.
VALID = {"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 32, 32, 3], "data": [0] * 3072}],
         "parameters": {"timeout": 1_000_000}, "outputs": [{"name": "probabilities", "parameters": {"classification": 2}}]}


def one_field_replaced(drawn: tuple[str, object, int]) -> dict:
    field, value, index = drawn
    request = json.loads(json.dumps(VALID))
    tensor, output = request["inputs"][0], request["outputs"][0]
    if field == "pixel":
        tensor["data"][index] = value
    elif field in ("timeout", "binary_data_output"):
        request["parameters"][field] = value
    elif field in ("classification", "binary_data"):
        output["parameters"][field] = value
    elif field == "binary_data_size":
        tensor["parameters"] = {field: value}
    elif field == "dimension":
        tensor["shape"][index % 4] = value
    else:
        tensor[field] = value
    return request


NEAR_VALID = st.tuples(st.sampled_from(["pixel", "pixel", "timeout", "binary_data_output", "classification",
                                        "binary_data", "binary_data_size", "dimension", "name", "datatype", "shape",
                                        "data"]), SCALARS | JSON, st.integers(0, 3071)).map(one_field_replaced)
HEADER_LENGTH = (st.none() | st.just("exact") | st.integers(-3, 5000).map(str)
                 | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=6))


@pytest.fixture()
def parse(web_config, heartbeat_only, tiny_model):
    """Run the parser on one request to the tiny model's infer route."""
    app = create_app(web_config)
    contract = heartbeat_of(tiny_model).models[0].contract

    def run(body: bytes, header_length: str | None) -> None:
        headers = {} if header_length is None else {"Inference-Header-Content-Length": header_length}
        with app.test_request_context("/v2/models/tiny/infer", method="POST", data=body, headers=headers,
                                      content_type="application/json"):
            try:
                v2._parse_infer(app.extensions["dataplane"], contract)
            except ServiceError as exc:
                assert 400 <= exc.status < 500 or exc.status == 503, (exc.status, exc)
                assert len(str(exc)) < 1500, str(exc)
        assert app.extensions["decode_budget"].in_use == 0  # the parse's reservation is always given back

    return run


FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])


@FUZZ
@given(header=HEADER, binary=st.binary(max_size=64), header_length=HEADER_LENGTH)
def test_any_structured_request_gets_a_typed_error_or_parses(parse, header, binary, header_length):
    text = json.dumps(header).encode()
    if header_length == "exact":
        header_length = str(len(text))
    parse(text + binary, header_length)


@FUZZ
@given(body=st.binary(max_size=300) | JSON.map(lambda value: json.dumps(value).encode()), header_length=HEADER_LENGTH)
def test_any_bytes_get_a_typed_error(parse, body, header_length):
    parse(body, header_length)


@FUZZ
@given(header=HEADER, files=st.lists(st.binary(max_size=40), max_size=3), cut=st.integers(0, 8))
def test_binary_tensor_data_gets_a_typed_error_or_parses(parse, header, files, cut):
    blob = b"".join(len(data).to_bytes(4, "little") + data for data in files)
    blob = blob[:len(blob) - cut] if cut else blob
    header = {**header, "inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(files)],
                                    "parameters": {"binary_data_size": len(blob)}}]}
    text = json.dumps(header).encode()
    parse(text + blob, str(len(text)))


@FUZZ
@given(header=NEAR_VALID)
def test_near_valid_requests_get_a_typed_error_or_parse(parse, header):
    parse(json.dumps(header).encode(), None)

