"""Every parser of a Redis record lets only RecordError escape, whatever the record holds.

A forged record (anyone who can write to Redis can forge one) is skipped and logged by its
reader; any other exception would take down a request (a 500 on every route that reads
heartbeats) or a model server's loop. The fixed cases are the ones seen in review; the
property-based cases (hypothesis) mutate valid records at random and throw raw bytes at them.
Each property runs a few hundred examples: about two seconds for the file.
"""
from __future__ import annotations

import json
import time
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_rest_api.queue.records import (
    Heartbeat,
    Job,
    ModelContract,
    Prediction,
    RecordError,
    Result,
    ServedModel,
)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any JSON value, nested a few levels: what a forger may put in place of any field.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def valid_heartbeat() -> dict[str, Any]:
    beat = Heartbeat(name="host-1:42", models=[ServedModel(ModelContract("tiny", "1", 32, 48, 5))],
                     device="tensorflow:CPU", batch_sizes={1: 3, 8: 2})
    return json.loads(beat.to_redis())


def valid_result() -> dict[str, Any]:
    result = Result.ok([Prediction("cat", 0.9, 3)], {"queue_ms": 1.0}, probabilities=[0.1, 0.9],
                       model="tiny", version="1")
    return json.loads(result.to_redis())


def valid_job_fields() -> dict[bytes, bytes]:
    job = Job(id="job-1", pixels=np.zeros((2, 3, 3), np.uint8), top_k=2, deadline=time.time() + 5)
    return {name.encode(): value for name, value in job.to_redis().items()}


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside nested dicts and lists."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths(child, (*prefix, index))
    return found


def replaced(body: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    copy = dict(body) if isinstance(body, dict) else list(body)
    copy[path[0]] = replaced(body[path[0]], path[1:], new)
    return copy


def only_record_errors(parse: Callable[[Any], Any], record: Any) -> None:
    try:
        parse(record)
    except RecordError:
        pass


@st.composite
def mutated(draw: st.DrawFn, valid: Callable[[], dict[str, Any]]) -> bytes:
    body = valid()
    path = draw(st.sampled_from(paths(body)))
    return json.dumps(replaced(body, path, draw(JSON_VALUES))).encode()


# --- what review found ------------------------------------------------------------------------
DEEP = [b"[" * 100_000, b'{"a":' * 40_000, b"[" * 100_000 + b"]" * 100_000]


@pytest.mark.parametrize("record", DEEP, ids=["open-brackets", "open-objects", "balanced"])
@pytest.mark.parametrize("parse", [Heartbeat.from_redis, Result.from_redis], ids=["heartbeat", "result"])
def test_json_nested_past_the_recursion_limit_is_a_record_error(parse, record):
    with pytest.raises(RecordError, match="nested too deeply"):
        parse(record)


@pytest.mark.parametrize("mutate", [
    lambda b: b.update(batch_sizes={"\u00b2": 1}),     # a digit to str.isdigit, not to int()
    lambda b: b.update(batch_sizes={"9" * 5000: 1}),   # past int()'s digit limit
    lambda b: b["models"][0]["contract"].update(resize=[]),
    lambda b: b["models"][0]["contract"].update(mean=[[], {}, None]),
    lambda b: b["models"][0].update(contract=[1, 2]),
], ids=["superscript-digit", "5000-digits", "list-resize", "nested-mean", "list-contract"])
def test_a_heartbeat_field_of_an_unexpected_type_is_a_record_error(mutate):
    body = valid_heartbeat()
    mutate(body)
    with pytest.raises(RecordError):
        Heartbeat.from_redis(json.dumps(body).encode())


@pytest.mark.parametrize("status", [[400], {"a": 1}, 400.0, True])
def test_a_result_status_that_is_not_an_integer_is_a_record_error(status):
    record = json.dumps({"success": False, "error": "x", "status": status, "timing": {}}).encode()
    with pytest.raises(RecordError):
        Result.from_redis(record)


def test_a_record_error_quotes_a_forged_value_only_in_part():
    body = valid_heartbeat()
    body["models"][0]["contract"]["resize"] = "x" * 100_000
    with pytest.raises(RecordError) as raised:
        Heartbeat.from_redis(json.dumps(body).encode())
    assert len(str(raised.value)) < 200


@pytest.mark.parametrize("kind, field", [
    *((b"image", f) for f in (b"v", b"id", b"shape", b"top_k", b"deadline", b"enqueued_at")),
    *((b"features", f) for f in (b"v", b"id", b"top_k", b"deadline", b"enqueued_at")),  # no shape
])
def test_a_job_error_quotes_a_forged_field_only_in_part(field, kind):
    """float() and bytes.decode() put the whole value in their message: a forged megabyte field
    must not become a megabyte log line."""
    fields = {**valid_job_fields(), field: b"\xff" + b"9" * 1_000_000}
    if kind == b"features":
        fields = {**fields, b"kind": b"features", b"features": np.zeros(3).tobytes()}
    with pytest.raises(RecordError) as raised:
        Job.from_redis(fields)
    assert len(str(raised.value)) < 200


@pytest.mark.parametrize("fields", [
    {b"v": b"1", b"id": b"x", b"shape": [1, 2]},
    {b"v": b"1", b"id": 5},
    [(b"v", b"1")],
    None,
], ids=["list-shape", "int-id", "not-a-mapping", "none"])
def test_job_fields_of_an_unexpected_type_are_a_record_error(fields):
    with pytest.raises(RecordError):
        Job.from_redis(fields)


# --- properties -------------------------------------------------------------------------------
@FUZZ
@given(record=st.binary(max_size=300))
def test_any_bytes_as_a_heartbeat_or_result_raise_only_record_errors(record):
    only_record_errors(Heartbeat.from_redis, record)
    only_record_errors(Result.from_redis, record)


@FUZZ
@given(record=mutated(valid_heartbeat))
def test_a_heartbeat_with_any_field_replaced_raises_only_record_errors(record):
    only_record_errors(Heartbeat.from_redis, record)


@FUZZ
@given(record=mutated(valid_result))
def test_a_result_with_any_field_replaced_raises_only_record_errors(record):
    only_record_errors(Result.from_redis, record)


@FUZZ
@given(contract=JSON_VALUES | st.dictionaries(st.sampled_from(sorted(ModelContract.__dataclass_fields__)),
                                              JSON_VALUES, max_size=8))
def test_any_json_as_a_contract_or_served_model_raises_only_record_errors(contract):
    only_record_errors(ModelContract.from_json, contract)
    only_record_errors(ServedModel.from_json, {"state": "ready", "contract": contract})


@FUZZ
@given(changes=st.dictionaries(st.sampled_from([b"v", b"id", b"shape", b"top_k", b"deadline", b"enqueued_at",
                                                b"later", b"full", b"rid", b"pixels", b"other"]),
                               st.binary(max_size=40), max_size=6),
       dropped=st.sets(st.sampled_from([b"v", b"id", b"shape", b"top_k", b"pixels"]), max_size=2))
def test_job_fields_with_any_value_replaced_or_dropped_raise_only_record_errors(changes, dropped):
    fields = {**valid_job_fields(), **changes}
    for name in dropped:
        fields.pop(name, None)
    only_record_errors(Job.from_redis, fields)
