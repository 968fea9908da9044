"""The model server, in-process, for one batch at a time against a real Redis."""
from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest

from keras_rest_api.model_server import ModelServer, top_predictions
from keras_rest_api.queue.jobs import JobQueue
from keras_rest_api.queue.records import Job
from tests.support.harness import tier_queue


def tiny_queue(config: dict) -> JobQueue:
    """The tiny model's queue, connected with `config`'s credentials (its tier's ACL user)."""
    return tier_queue(config, "tiny")


@pytest.fixture()
def queue(model_server_config, redis_client) -> JobQueue:
    """The queue as the model server sees it, as the model server's ACL user."""
    q = tiny_queue(model_server_config)
    q.ensure_group()
    return q


@pytest.fixture()
def web(config, queue) -> JobQueue:
    """The same queue as the web tier sees it, as the web tier's ACL user: jobs go in, answers come out."""
    return tiny_queue(config)


@pytest.fixture()
def server_config(model_server_config):
    return {**model_server_config, "BATCH_SIZE": 4, "BATCH_WAIT_MS": 0, "QUEUE_BLOCK_MS": 200, "CLAIM_IDLE_MS": 100,
            "MAX_DELIVERIES": 2}


def next_batch(server: ModelServer) -> list:
    """The next batch the server's claimer forms (one model is served: one batch at most)."""
    batches = server.claimer.next_batches(server.models.active())
    assert len(batches) <= 1
    return batches[0][1] if batches else []


def random_job(n: int, size=(32, 32), seconds: float = 10.0) -> Job:
    pixels = np.random.default_rng(n).integers(0, 256, (*size, 3), dtype=np.uint8)
    return Job(id=f"job-{n}", pixels=pixels, top_k=5, deadline=time.time() + seconds)


def test_one_batch_answers_each_job_with_the_models_own_output(queue, tiny_model, server_config, web):
    server = ModelServer(queue, tiny_model, server_config, name="ms-1")
    jobs = [random_job(n) for n in range(3)]
    for job in jobs:
        web.submit(job, max_length=100)

    server.run(burst=True)

    expected = tiny_model.predict(np.stack([job.pixels for job in jobs]))
    for job, row in zip(jobs, expected):
        result = web.wait_result(job.id, timeout=1)
        assert result.success is True
        got = {p.label: p.probability for p in result.predictions}
        assert got == pytest.approx({label: float(p) for label, p in zip(tiny_model.labels, row)}, abs=1e-6)
        assert result.timing["batch"] == 3
        assert result.timing["inference"] > 0
        assert result.model == tiny_model.name
    assert web.length() == 0


def test_a_batch_never_exceeds_batch_size(queue, tiny_model, server_config, web):
    server = ModelServer(queue, tiny_model, server_config, name="ms-1")
    for n in range(6):
        web.submit(random_job(n), max_length=100)
    assert len(next_batch(server)) == 4
    assert len(next_batch(server)) == 2


def test_a_full_batch_runs_without_waiting_for_the_window(queue, tiny_model, server_config, web):
    server = ModelServer(queue, tiny_model, {**server_config, "BATCH_WAIT_MS": 5000}, name="ms-1")
    for n in range(4):
        web.submit(random_job(n), max_length=100)
    started = time.monotonic()
    assert len(next_batch(server)) == 4
    assert time.monotonic() - started < 1.0


def test_the_window_gathers_jobs_that_arrive_after_the_first(queue, tiny_model, server_config, web):
    # The window is the model's own (its contract's max_wait_ms, from BATCH_WAIT_MS when it was loaded).
    windowed = dataclasses.replace(tiny_model, contract=dataclasses.replace(tiny_model.contract, max_wait_ms=800))
    server = ModelServer(queue, windowed, {**server_config, "BATCH_WAIT_MS": 800}, name="ms-1")
    web.submit(random_job(0), max_length=100)

    def late_arrivals():
        for n in (1, 2):
            time.sleep(0.1)
            web.submit(random_job(n), max_length=100)

    sender = threading.Thread(target=late_arrivals)
    sender.start()
    started = time.monotonic()
    batch = next_batch(server)
    elapsed = time.monotonic() - started
    sender.join()
    assert [c.job.id for c in batch] == ["job-0", "job-1", "job-2"]
    # Not full, so it ran when the window ended: after 0.8 s, and not much later.
    assert 0.75 <= elapsed < 1.5


def test_jobs_past_their_deadline_are_dropped_unanswered(queue, tiny_model, server_config, web):
    server = ModelServer(queue, tiny_model, server_config, name="ms-1")
    web.submit(random_job(0, seconds=-1), max_length=100)
    web.submit(random_job(1), max_length=100)
    server.run(burst=True)
    assert web.wait_result("job-1", timeout=1).success is True
    assert web.wait_result("job-0", timeout=0.1) is None
    assert web.length() == 0


class ExplodingModel:
    """Wraps the tiny model and raises on the batch calls it is told to."""

    def __init__(self, model, failures: int):
        self._model = model
        self.failures = failures

    def __getattr__(self, name):
        return getattr(self._model, name)

    def predict(self, pixels):
        if self.failures:
            self.failures -= 1
            raise RuntimeError("simulated out-of-memory")
        return self._model.predict(pixels)


def test_a_failing_batch_answers_every_job_with_an_error_and_serving_goes_on(queue, tiny_model, server_config, caplog, web):
    server = ModelServer(queue, ExplodingModel(tiny_model, failures=1), server_config, name="ms-1")
    for n in range(3):
        web.submit(random_job(n), max_length=100)
    server.run(burst=True)
    for n in range(3):
        result = web.wait_result(f"job-{n}", timeout=1)
        assert result.success is False
        assert result.status == 500
        assert "ms-1#1" in result.error
        assert "out-of-memory" not in result.error  # internals stay in the log
    assert "ms-1#1" in caplog.text and "simulated out-of-memory" in caplog.text

    web.submit(random_job(9), max_length=100)
    server.run(burst=True)
    assert web.wait_result("job-9", timeout=1).success is True


def test_an_image_prepared_for_another_input_size_is_answered_503(queue, tiny_model, server_config, web):
    server = ModelServer(queue, tiny_model, server_config, name="ms-1")
    web.submit(random_job(0, size=(64, 64)), max_length=100)
    web.submit(random_job(1), max_length=100)
    server.run(burst=True)
    stale = web.wait_result("job-0", timeout=1)
    assert stale.success is False and stale.status == 503
    assert web.wait_result("job-1", timeout=1).success is True


def test_a_job_abandoned_by_a_dead_server_is_answered_by_another(queue, tiny_model, server_config, web):
    web.submit(random_job(0), max_length=100)
    queue.claim("dead-server", count=1, block_ms=100)  # claimed, then the server "died"
    time.sleep(0.15)
    survivor = ModelServer(queue, tiny_model, server_config, name="survivor")
    survivor.run(burst=True)
    result = web.wait_result("job-0", timeout=1)
    assert result.success is True
    assert web.length() == 0


def test_a_job_that_keeps_killing_its_servers_is_answered_with_an_error(queue, tiny_model, server_config, web):
    web.submit(random_job(0), max_length=100)
    queue.claim("dead-1", count=1, block_ms=100)
    time.sleep(0.15)
    queue.reclaim("dead-2", min_idle_ms=100, count=1)  # delivery 2, and that one died too
    time.sleep(0.15)
    survivor = ModelServer(queue, tiny_model, server_config, name="survivor")
    survivor.run(burst=True)  # delivery 3 > MAX_DELIVERIES=2
    result = web.wait_result("job-0", timeout=1)
    assert result.success is False and result.status == 422
    assert "attempted 3 times" in result.error


def test_the_heartbeat_publishes_the_models_metadata(queue, tiny_model, server_config, web):
    server = ModelServer(queue, tiny_model, server_config, name="ms-1")
    server.announce()
    [live] = web.live_servers(ttl=5)
    assert live.name == "ms-1"
    [served] = live.models
    assert (served.contract.name, served.contract.version, served.state) == (tiny_model.name, "1", "ready")
    assert served.contract.input_size == (32, 32)
    assert served.contract.classes == len(tiny_model.labels)


def test_stop_finishes_and_leaves_the_live_list(queue, tiny_model, server_config, web):
    server = ModelServer(queue, tiny_model, server_config, name="ms-1")
    runner = threading.Thread(target=server.run)
    runner.start()
    try:
        web.submit(random_job(0), max_length=100)
        assert web.wait_result("job-0", timeout=5).success is True
        assert [s.name for s in web.live_servers(ttl=5)] == ["ms-1"]
    finally:
        server.stop()
        runner.join(5)
    assert not runner.is_alive()
    assert web.live_servers(ttl=5) == []


def test_a_burst_drains_the_queue_then_returns_and_leaves(queue, tiny_model, server_config, web):
    server = ModelServer(queue, tiny_model, server_config, name="ms-1")
    for n in range(10):
        web.submit(random_job(n), max_length=100)
    server.run(burst=True)
    assert web.length() == 0
    assert sum(size * count for size, count in server.batch_sizes.items()) == 10
    assert web.live_servers(ttl=5) == []


def test_a_hostile_entry_in_the_queue_is_dropped_and_serving_goes_on(queue, tiny_model, server_config, caplog, web, redis_client):
    server = ModelServer(queue, tiny_model, server_config, name="ms-1")
    fields = random_job(0).to_redis()
    fields["top_k"] = b"-5000"
    redis_client.xadd(queue.stream, fields)  # put there by someone with write access to Redis
    web.submit(random_job(1), max_length=100)
    server.run(burst=True)
    assert web.wait_result("job-1", timeout=1).success is True
    assert "top_k -5000" in caplog.text
    assert web.length() == 0


def test_top_predictions_are_sorted_and_cut_to_k():
    probabilities = np.array([0.1, 0.5, 0.05, 0.3, 0.05], dtype=np.float32)
    labels = ["a", "b", "c", "d", "e"]
    assert [p.label for p in top_predictions(probabilities, labels, 3)] == ["b", "d", "a"]
    assert len(top_predictions(probabilities, labels, 20)) == 5


def test_run_overlaps_claiming_with_inference_and_answers_each_job_once(queue, tiny_model, server_config, web, redis_client):
    server = ModelServer(queue, tiny_model, server_config, name="ms-1")
    runner = threading.Thread(target=server.run)
    runner.start()
    try:
        for n in range(24):
            web.submit(random_job(n), max_length=100)
        for n in range(24):
            assert web.wait_result(f"job-{n}", timeout=5).success is True
    finally:
        server.stop()
        runner.join(5)
    assert sum(size * count for size, count in server.batch_sizes.items()) == 24
    assert max(server.batch_sizes) <= 4
    assert not list(redis_client.scan_iter(match=queue.keys.all_results))  # no second answers


def test_a_batch_that_waited_for_the_model_is_topped_up_with_later_arrivals(queue, tiny_model, server_config, web):
    server = ModelServer(queue, tiny_model, server_config, name="ms-1")
    web.submit(random_job(0), max_length=100)
    waiting = next_batch(server)
    for n in range(1, 6):
        web.submit(random_job(n), max_length=100)
    assert [c.job.id for c in server.claimer.top_up(server.models.active()[0], waiting)] == ["job-0", "job-1", "job-2", "job-3"]


def test_a_stop_answers_every_claimed_job_even_those_still_being_replied_to(queue, tiny_model, server_config, web, redis_client):
    # The replier thread publishes a batch's answers while the model runs the next one; a stop
    # must wait for it, or answers computed just before the stop would never reach Redis.
    # Long enough that the server never takes over its own jobs while they wait to be replied to.
    server = ModelServer(queue, tiny_model, {**server_config, "CLAIM_IDLE_MS": 60_000}, name="ms-1")
    reply = queue.reply

    def slow_reply(*args, **kwargs):  # Redis slow to take answers: the replier lags the model
        time.sleep(0.2)
        reply(*args, **kwargs)

    queue.reply = slow_reply
    for n in range(40):
        web.submit(random_job(n), max_length=100)
    runner = threading.Thread(target=server.run)
    runner.start()
    assert web.wait_result("job-0", timeout=5).success is True
    server.stop()
    runner.join(5)
    assert not runner.is_alive()
    answered = sum(size * count for size, count in server.batch_sizes.items())
    assert answered >= 1
    pending = redis_client.xpending(queue.stream, queue.group)["pending"]
    assert pending == 0  # nothing claimed was left unacknowledged
    results = list(redis_client.scan_iter(match=queue.keys.all_results))
    assert len(results) == answered - 1  # every answer but the one taken above is waiting in Redis
    assert web.length() == 40 - answered  # and what was never claimed is still queued
