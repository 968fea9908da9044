"""The wire format between the tiers: jobs as compact stream fields, results as JSON, key names."""
from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from helpers import (
    WIRE_VERSION,
    Job,
    Keys,
    WireFormatError,
    decode_job,
    decode_result,
    encode_job,
    encode_result,
    error_result,
    is_valid_request_id,
    new_request_id,
    success_result,
)


def make_job(height: int = 224, width: int = 224, seed: int = 0) -> Job:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Job(id=uuid.uuid4().hex, pixels=pixels, top_k=7, deadline=time.time() + 30.123456789,
               enqueued_at=time.time() - 0.000123)


def as_stream_fields(fields: dict[str, bytes]) -> dict[bytes, bytes]:
    """What XREADGROUP hands back for an entry written with `fields`: bytes names and values."""
    return {name.encode(): value for name, value in fields.items()}


# --- jobs -------------------------------------------------------------------------------------

@pytest.mark.parametrize("height,width", [(224, 224), (32, 32), (1, 1), (240, 320)])
def test_a_job_survives_the_round_trip_exactly(height, width):
    job = make_job(height, width)
    decoded = decode_job(as_stream_fields(encode_job(job)))
    assert decoded.id == job.id
    assert decoded.pixels.shape == (height, width, 3)
    assert decoded.pixels.dtype == np.uint8
    assert np.array_equal(decoded.pixels, job.pixels)
    assert decoded.top_k == job.top_k
    assert decoded.deadline == job.deadline  # repr of a float round-trips exactly
    assert decoded.enqueued_at == job.enqueued_at


def test_every_field_is_bytes_ready_for_redis():
    fields = encode_job(make_job(8, 8))
    assert all(isinstance(name, str) and isinstance(value, bytes) for name, value in fields.items())
    assert fields["v"] == WIRE_VERSION


def test_a_224_job_is_its_raw_pixels_and_little_else():
    fields = encode_job(make_job(224, 224))
    assert len(fields["pixels"]) == 224 * 224 * 3
    assert len(fields["pixels"]) <= 150 * 1024
    total = sum(len(name) + len(value) for name, value in fields.items())
    assert total <= 150 * 1024 + 1024


def test_non_contiguous_pixels_are_encoded_in_image_order():
    base = np.random.default_rng(3).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    view = base[::2, ::3]  # a strided view, not C-contiguous
    job = Job(id="strided", pixels=view, top_k=1, deadline=1.0)
    assert np.array_equal(decode_job(as_stream_fields(encode_job(job))).pixels, view)


@pytest.mark.parametrize("shape", [(32, 32), (32, 32, 4), (32, 32, 1), (2, 32, 32, 3)])
def test_pixels_that_are_not_height_width_rgb_are_refused_when_encoding(shape):
    job = Job(id="bad", pixels=np.zeros(shape, dtype=np.uint8), top_k=1, deadline=1.0)
    with pytest.raises(ValueError):
        encode_job(job)


def test_a_job_from_another_wire_version_is_refused():
    fields = as_stream_fields(encode_job(make_job(4, 4)))
    fields[b"v"] = b"2"
    with pytest.raises(WireFormatError, match="version"):
        decode_job(fields)


@pytest.mark.parametrize("missing", [b"v", b"id", b"shape", b"top_k", b"deadline", b"enqueued_at", b"pixels"])
def test_a_job_missing_a_field_is_refused(missing):
    fields = as_stream_fields(encode_job(make_job(4, 4)))
    del fields[missing]
    with pytest.raises(WireFormatError):
        decode_job(fields)


@pytest.mark.parametrize("cut", [1, 3, 4 * 4 * 3 - 1])
def test_a_job_whose_pixels_do_not_fill_its_shape_is_refused(cut):
    fields = as_stream_fields(encode_job(make_job(4, 4)))
    fields[b"pixels"] = fields[b"pixels"][:-cut]
    with pytest.raises(WireFormatError):
        decode_job(fields)


def test_a_job_with_extra_pixel_bytes_is_refused():
    fields = as_stream_fields(encode_job(make_job(4, 4)))
    fields[b"pixels"] += b"\x00\x00\x00"
    with pytest.raises(WireFormatError):
        decode_job(fields)


@pytest.mark.parametrize("name,value", [
    (b"shape", b"4"), (b"shape", b"four,four"), (b"top_k", b"many"),
    (b"deadline", b"soon"), (b"id", b"\xff\xfe"),
])
def test_a_job_with_a_malformed_field_is_refused(name, value):
    fields = as_stream_fields(encode_job(make_job(4, 4)))
    fields[name] = value
    with pytest.raises(WireFormatError):
        decode_job(fields)


# --- results ----------------------------------------------------------------------------------

def test_a_success_result_survives_the_round_trip():
    result = success_result(
        [{"label": "dog", "probability": 0.875}, {"label": "cat", "probability": 0.125}],
        {"queue": 1.5, "inference": 12.25, "batch": 4.0},
    )
    data = encode_result(result)
    assert isinstance(data, bytes)
    assert decode_result(data) == result
    assert decode_result(data)["success"] is True


def test_an_error_result_survives_the_round_trip_with_its_status():
    result = error_result("the model failed", 500)
    decoded = decode_result(encode_result(result))
    assert decoded == {"success": False, "error": "the model failed", "status": 500, "timing": {}}


def test_results_keep_non_ascii_labels():
    result = success_result([{"label": "café ☕", "probability": 1.0}], {})
    assert decode_result(encode_result(result))["predictions"][0]["label"] == "café ☕"


# --- request ids ------------------------------------------------------------------------------

def test_a_fresh_request_id_is_valid_and_unique():
    ids = {new_request_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(is_valid_request_id(value) for value in ids)


@pytest.mark.parametrize("value", [uuid.uuid4().hex, str(uuid.uuid4()), "req-1.2_3", "a", "x" * 64])
def test_plain_request_ids_are_accepted(value):
    assert is_valid_request_id(value)


@pytest.mark.parametrize("value", [
    "", "a b", "../x", "x" * 65, "a:b", "a\nb", "id\r\nX-Injected: 1", "a/b", "*", "é",
])
def test_request_ids_unsafe_in_keys_or_logs_are_rejected(value):
    assert not is_valid_request_id(value)


def test_a_request_id_with_a_trailing_newline_is_rejected():
    assert not is_valid_request_id("abc\n")


# --- key names --------------------------------------------------------------------------------

def test_keys_are_namespaced_by_prefix_and_queue_name():
    keys = Keys("prod", "images")
    assert keys.queue == "prod:queue:images"
    assert keys.result("abc") == "prod:result:abc"
    assert keys.servers == "prod:servers:images"
    assert keys.server("host:1") == "prod:server:images:host:1"
    names = [keys.queue, keys.result("abc"), keys.servers, keys.server("host:1")]
    assert all(name.startswith("prod:") for name in names)
    assert len(set(names)) == len(names)


def test_two_deployments_sharing_redis_never_share_a_key():
    one, two = Keys("a", "images"), Keys("b", "images")
    assert {one.queue, one.servers, one.server("s"), one.result("r")}.isdisjoint(
        {two.queue, two.servers, two.server("s"), two.result("r")}
    )
    other_queue = Keys("a", "thumbnails")
    assert one.queue != other_queue.queue
    assert one.servers != other_queue.servers
    assert one.server("s") != other_queue.server("s")
