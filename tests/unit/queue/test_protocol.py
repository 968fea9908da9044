"""The queue's records (queue/records.py): jobs as compact stream fields, results and heartbeats as JSON, key names.

Records read back from Redis are untrusted: every malformed or out-of-range one is refused."""
from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from keras_rest_api.ids import is_valid_request_id, new_request_id
from keras_rest_api.queue.records import (
    ModelContract,
    ServedModel,
    INFERENCE_BUCKETS,
    WIRE_VERSION,
    Heartbeat,
    Job,
    Keys,
    Prediction,
    RecordError,
    Result,
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
    decoded = Job.from_redis(as_stream_fields(job.to_redis()))
    assert decoded.id == job.id
    assert decoded.pixels.shape == (height, width, 3)
    assert decoded.pixels.dtype == np.uint8
    assert np.array_equal(decoded.pixels, job.pixels)
    assert decoded.top_k == job.top_k
    assert decoded.deadline == job.deadline  # repr of a float round-trips exactly
    assert decoded.enqueued_at == job.enqueued_at


def test_every_field_is_bytes_ready_for_redis():
    fields = make_job(8, 8).to_redis()
    assert all(isinstance(name, str) and isinstance(value, bytes) for name, value in fields.items())
    assert fields["v"] == WIRE_VERSION


def test_a_224_job_is_its_raw_pixels_and_little_else():
    fields = make_job(224, 224).to_redis()
    assert len(fields["pixels"]) == 224 * 224 * 3
    assert len(fields["pixels"]) <= 150 * 1024
    total = sum(len(name) + len(value) for name, value in fields.items())
    assert total <= 150 * 1024 + 1024


def test_non_contiguous_pixels_are_encoded_in_image_order():
    base = np.random.default_rng(3).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    view = base[::2, ::3]  # a strided view, not C-contiguous
    job = Job(id="strided", pixels=view, top_k=1, deadline=1.0)
    assert np.array_equal(Job.from_redis(as_stream_fields(job.to_redis())).pixels, view)


@pytest.mark.parametrize("shape", [(32, 32), (32, 32, 4), (32, 32, 1), (2, 32, 32, 3)])
def test_pixels_that_are_not_height_width_rgb_are_refused_when_encoding(shape):
    job = Job(id="bad", pixels=np.zeros(shape, dtype=np.uint8), top_k=1, deadline=1.0)
    with pytest.raises(ValueError):
        job.to_redis()


def test_a_job_from_another_wire_version_is_refused():
    fields = as_stream_fields(make_job(4, 4).to_redis())
    fields[b"v"] = b"2"
    with pytest.raises(RecordError, match="version"):
        Job.from_redis(fields)


@pytest.mark.parametrize("missing", [b"v", b"id", b"shape", b"top_k", b"deadline", b"enqueued_at", b"pixels"])
def test_a_job_missing_a_field_is_refused(missing):
    fields = as_stream_fields(make_job(4, 4).to_redis())
    del fields[missing]
    with pytest.raises(RecordError):
        Job.from_redis(fields)


@pytest.mark.parametrize("cut", [1, 3, 4 * 4 * 3 - 1])
def test_a_job_whose_pixels_do_not_fill_its_shape_is_refused(cut):
    fields = as_stream_fields(make_job(4, 4).to_redis())
    fields[b"pixels"] = fields[b"pixels"][:-cut]
    with pytest.raises(RecordError):
        Job.from_redis(fields)


def test_a_job_with_extra_pixel_bytes_is_refused():
    fields = as_stream_fields(make_job(4, 4).to_redis())
    fields[b"pixels"] += b"\x00\x00\x00"
    with pytest.raises(RecordError):
        Job.from_redis(fields)


@pytest.mark.parametrize("name,value", [
    (b"shape", b"4"), (b"shape", b"four,four"), (b"top_k", b"many"),
    (b"deadline", b"soon"), (b"id", b"\xff\xfe"),
])
def test_a_job_with_a_malformed_field_is_refused(name, value):
    fields = as_stream_fields(make_job(4, 4).to_redis())
    fields[name] = value
    with pytest.raises(RecordError):
        Job.from_redis(fields)


# --- results ----------------------------------------------------------------------------------

def test_a_success_result_survives_the_round_trip():
    result = Result.ok([Prediction("dog", 0.875), Prediction("cat", 0.125)],
                       {"queue": 1.5, "inference": 12.25, "batch": 4.0}, model="tiny", version="3")
    data = result.to_redis()
    assert isinstance(data, bytes)
    assert Result.from_redis(data) == result
    assert result.as_response() == {"success": True, "predictions": [
        {"label": "dog", "probability": 0.875}, {"label": "cat", "probability": 0.125}],
        "model": "tiny", "version": "3"}


def test_an_error_result_survives_the_round_trip_with_its_status():
    decoded = Result.from_redis(Result.failure("the model failed", 500).to_redis())
    assert (decoded.success, decoded.error, decoded.status) == (False, "the model failed", 500)
    assert decoded.as_response() == {"success": False, "error": "the model failed"}


def test_the_whole_output_vector_travels_when_asked_for():
    result = Result.ok([Prediction("a", 0.75)], {}, probabilities=np.array([0.75, 0.25], dtype=np.float32))
    assert Result.from_redis(result.to_redis()).probabilities == [0.75, 0.25]


def test_results_keep_non_ascii_labels():
    result = Result.ok([Prediction("café ☕", 1.0)], {})
    assert Result.from_redis(result.to_redis()).predictions[0].label == "café ☕"


def test_a_model_server_cannot_be_made_to_answer_with_a_success_status():
    with pytest.raises(ValueError, match="status"):
        Result.failure("fine really", 200)


@pytest.mark.parametrize("record", [
    b"", b"not json", b"[]", b'"text"', b"{}",
    b'{"success": "yes", "predictions": []}',
    b'{"success": true}',
    b'{"success": true, "predictions": {"label": "x"}}',
    b'{"success": true, "predictions": [{"label": 5, "probability": 0.5}]}',
    b'{"success": true, "predictions": [{"label": "x", "probability": "high"}]}',
    b'{"success": true, "predictions": [{"label": "x", "probability": NaN}]}',
    b'{"success": true, "predictions": [{"label": "x", "probability": Infinity}]}',
    b'{"success": true, "predictions": [], "timing": {"queue": "slow"}}',
    b'{"success": true, "predictions": [], "timing": {"<script>": 1}}',
    b'{"success": true, "predictions": [], "probabilities": ["a"]}',
    b'{"success": false, "error": "x", "status": 200}',
    b'{"success": false, "error": "x", "status": 302}',
    b'{"success": false, "error": "x", "status": "500"}',
    b'{"success": false, "status": 500}',
    b'{"success": false, "error": ["x"], "status": 500}',
], ids=lambda r: r.decode()[:40])
def test_a_forged_or_corrupt_result_record_is_refused(record):
    with pytest.raises(RecordError):
        Result.from_redis(record)


def test_a_result_record_too_large_to_be_real_is_refused_before_parsing():
    with pytest.raises(RecordError, match="over"):
        Result.from_redis(b'{"success": true, "predictions": [], "error": "' + b"x" * 9_000_000 + b'"}')


# --- heartbeats -------------------------------------------------------------------------------

def make_heartbeat(**overrides) -> Heartbeat:
    values = dict(name="host-1:42", models=[ServedModel(ModelContract("tiny", "1", 32, 48, 5)),
                                          ServedModel(ModelContract("tiny", "2", 32, 48, 5), "loading")],
                  device="tensorflow:CPU", batch_sizes={1: 3, 8: 2})
    values.update(overrides)
    return Heartbeat(**values)


def test_a_heartbeat_survives_the_round_trip():
    beat = make_heartbeat()
    beat.inference.observe(0.02)
    decoded = Heartbeat.from_redis(beat.to_redis())
    assert decoded == beat
    assert decoded.models[1].contract.input_size == (32, 48) and decoded.models[1].state == "loading"
    assert decoded.inference.count == 1 and len(decoded.inference.buckets) == len(INFERENCE_BUCKETS)


def forged(mutate) -> bytes:
    import json

    body = json.loads(make_heartbeat().to_redis())
    mutate(body)
    return json.dumps(body).encode()


@pytest.mark.parametrize("mutate", [
    lambda b: b["models"][0]["contract"].update(input_height=0),
    lambda b: b["models"][0]["contract"].update(input_height=-224),
    lambda b: b["models"][0]["contract"].update(input_width=10**9),
    lambda b: b["models"][0]["contract"].update(input_height="224"),
    lambda b: b["models"][0]["contract"].update(input_height=True),
    lambda b: b["models"][0]["contract"].update(classes=0),
    lambda b: b["models"][0]["contract"].update(name="../etc"),
    lambda b: b["models"][0]["contract"].update(version="latest"),
    lambda b: b["models"][0]["contract"].update(resize="stretch"),
    lambda b: b["models"][0]["contract"].update(crop_fraction=0),
    lambda b: b["models"][0]["contract"].update(std=[1, 0, 1]),
    lambda b: b["models"][0]["contract"].update(evil=1),
    lambda b: b["models"][0]["contract"].pop("classes"),
    lambda b: b["models"][0].update(state="hijacked"),
    lambda b: b.update(models={"tiny": 1}),
    lambda b: b.update(models=[b["models"][0]] * 1000),
    lambda b: b.update(name="bad name with spaces"),
    lambda b: b.update(name=""),
    lambda b: b.update(name="x" * 200),
    lambda b: b.update(pid=-1),
    lambda b: b.update(batch_sizes={"many": 1}),
    lambda b: b.update(batch_sizes={"4": -1}),
    lambda b: b["inference"].update(buckets=[1, 2]),
], ids=lambda f: "")
def test_a_heartbeat_with_a_field_out_of_range_is_refused(mutate):
    with pytest.raises(RecordError):
        Heartbeat.from_redis(forged(mutate))


def test_a_contract_says_what_is_wrong_with_it():
    with pytest.raises(RecordError, match="resize 'stretch' is not one of center_crop, squash, letterbox"):
        ModelContract("m", "1", 224, 224, 10, resize="stretch")


def test_an_image_contract_with_an_unknown_input_kind_is_refused():
    with pytest.raises(RecordError, match="input kind 'bogus' is not one of image, features"):
        ModelContract("m", "1", 224, 224, 10, input_kind="bogus")


# --- hostile jobs -----------------------------------------------------------------------------

@pytest.mark.parametrize("name,value", [
    (b"top_k", b"-5000"), (b"top_k", b"0"), (b"top_k", b"10000000"),
    (b"shape", b"0,4"), (b"shape", b"-4,-4"), (b"shape", b"100000,100000"),
    (b"deadline", b"nan"), (b"deadline", b"inf"), (b"id", b"../../etc"), (b"id", b"a" * 65),
    (b"rid", b"x\r\ninjected"),
])
def test_a_job_with_a_field_out_of_range_is_refused(name, value):
    fields = as_stream_fields(make_job(4, 4).to_redis())
    fields[name] = value
    with pytest.raises(RecordError):
        Job.from_redis(fields)


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
    assert keys.queue("resnet50", "2") == "prod:queue:images:resnet50:2"
    assert keys.result("abc") == "prod:result:abc"
    assert keys.servers == "prod:servers:images"
    assert keys.server("host:1") == "prod:server:images:host:1"
    names = [keys.queue("m", "1"), keys.result("abc"), keys.servers, keys.server("host:1")]
    assert all(name.startswith("prod:") for name in names)
    assert len(set(names)) == len(names)


def test_key_patterns_match_exactly_their_own_kind_of_key():
    from fnmatch import fnmatchcase

    keys = Keys("prod", "images")
    assert fnmatchcase(keys.result("abc"), keys.all_results)
    assert fnmatchcase(keys.pending("abc"), keys.all_pending)
    assert fnmatchcase(keys.server("host:1"), keys.all_servers)
    assert not fnmatchcase(keys.queue("m", "1"), keys.all_results) and not fnmatchcase(keys.servers, keys.all_servers)


def test_two_deployments_sharing_redis_never_share_a_key():
    one, two = Keys("a", "images"), Keys("b", "images")
    assert {one.queue("m", "1"), one.servers, one.server("s"), one.result("r")}.isdisjoint(
        {two.queue("m", "1"), two.servers, two.server("s"), two.result("r")}
    )
    other_queue = Keys("a", "thumbnails")
    assert one.queue("m", "1") != other_queue.queue("m", "1")
    assert one.servers != other_queue.servers
    assert one.server("s") != other_queue.server("s")
