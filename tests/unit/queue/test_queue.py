"""The queue protocol against a real Redis: submit, claim, reply, wait, reclaim, heartbeats."""
from __future__ import annotations

import time

import numpy as np
import pytest

from keras_rest_api.queue import jobs
from keras_rest_api.queue.jobs import JobQueue, QueueFull
from keras_rest_api.queue.redis_users import connect
from keras_rest_api.queue.records import Heartbeat, Job, Keys, ModelContract, Prediction, Result, ServedModel


@pytest.fixture()
def queue(redis_client, redis_server) -> JobQueue:
    q = JobQueue(connect(redis_server.url, 1.0, 10.0), Keys("t", "images"), "servers").for_model("m", "1")
    q.ensure_group()
    return q


def make_job(n: int = 0, seconds: float = 10.0) -> Job:
    pixels = np.full((4, 4, 3), n % 256, dtype=np.uint8)
    return Job(id=f"job-{n}", pixels=pixels, top_k=3, deadline=time.time() + seconds)


def test_a_submitted_job_is_claimed_whole(queue):
    job = make_job(7)
    queue.submit(job, max_length=10)
    [claimed] = queue.claim("server-a", count=8, block_ms=100)
    assert claimed.job.id == job.id
    np.testing.assert_array_equal(claimed.job.pixels, job.pixels)
    assert claimed.job.top_k == 3
    assert claimed.deliveries == 1


def test_submit_refuses_once_the_queue_holds_max_length(queue):
    for n in range(3):
        queue.submit(make_job(n), max_length=3)
    with pytest.raises(QueueFull):
        queue.submit(make_job(3), max_length=3)
    assert queue.length() == 3


def _count_xlen(queue: JobQueue) -> list[int]:
    calls = []
    real = queue.redis.xlen
    queue.redis.xlen = lambda name: calls.append(1) or real(name)  # type: ignore[method-assign]
    return calls


def test_admits_trusts_a_fresh_look_far_from_the_bound_and_asks_redis_otherwise(queue):
    xlens = _count_xlen(queue)
    assert queue.admits(10) and len(xlens) == 1  # no look yet: XLEN
    for n in range(4):  # 0 seen + 4 submitted = 4 < 10 / 2: no round trip
        queue.submit(make_job(n), max_length=10)
        assert queue.admits(10)
    assert len(xlens) == 1
    queue.submit(make_job(4), max_length=10)  # 5 is half the bound: ask Redis again
    assert queue.admits(10) and len(xlens) == 2
    assert not queue.admits(5) and len(xlens) == 3  # full: the refusal comes before any upload is read


def test_admits_looks_again_once_its_look_is_old(queue, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(jobs.time, "monotonic", lambda: clock[0])
    assert queue.admits(4)
    for n in range(4):  # another web process fills the queue meanwhile
        queue.redis.xadd(queue.stream, {"filler": str(n)})
    assert queue.admits(4)  # within LENGTH_LOOK_SECONDS the look stands; submit's check still refuses
    with pytest.raises(QueueFull):
        queue.submit(make_job(9), max_length=4)
    clock[0] += jobs.LENGTH_LOOK_SECONDS
    assert not queue.admits(4)


def test_after_a_refused_submit_the_next_request_is_refused_before_its_upload(queue):
    for n in range(2):
        queue.submit(make_job(n), max_length=2)
    with pytest.raises(QueueFull):
        queue.submit(make_job(2), max_length=2)
    xlens = _count_xlen(queue)
    assert not queue.admits(2) and len(xlens) == 1


def test_claimed_but_unanswered_jobs_still_count_towards_the_bound(queue):
    queue.submit(make_job(0), max_length=1)
    queue.claim("server-a", count=1, block_ms=100)
    with pytest.raises(QueueFull):
        queue.submit(make_job(1), max_length=1)


def test_the_waiting_caller_gets_the_reply_and_the_entry_is_gone(queue):
    queue.submit(make_job(1), max_length=10)
    [claimed] = queue.claim("server-a", count=1, block_ms=100)
    queue.reply([(claimed, Result.ok([Prediction("cat", 0.5)], {}))], result_ttl=5)
    assert queue.wait_result("job-1", timeout=1) == Result.ok([Prediction("cat", 0.5)], {})
    assert queue.length() == 0
    assert queue.redis.xpending(queue.stream, queue.group)["pending"] == 0


def test_a_result_nobody_collects_expires(queue):
    queue.submit(make_job(1), max_length=10)
    [claimed] = queue.claim("server-a", count=1, block_ms=100)
    queue.reply([(claimed, Result.ok([], {}))], result_ttl=0.2)
    assert 0 < queue.redis.pttl(queue.keys.result("job-1")) <= 200
    time.sleep(0.3)
    assert not queue.redis.exists(queue.keys.result("job-1"))


def test_wait_result_times_out_with_none(queue):
    started = time.monotonic()
    assert queue.wait_result("nobody", timeout=0.3) is None
    assert 0.25 <= time.monotonic() - started < 1.0


def test_two_servers_never_claim_the_same_job(queue):
    for n in range(20):
        queue.submit(make_job(n), max_length=100)
    first = queue.claim("server-a", count=7, block_ms=100)
    second = queue.claim("server-b", count=100, block_ms=100)
    ids_a = {c.job.id for c in first}
    ids_b = {c.job.id for c in second}
    assert len(ids_a) == 7 and len(ids_b) == 13
    assert not ids_a & ids_b


def test_claim_blocks_until_timeout_when_the_queue_is_empty(queue):
    started = time.monotonic()
    assert queue.claim("server-a", count=4, block_ms=200) == []
    assert 0.15 <= time.monotonic() - started < 1.0


def test_jobs_of_a_dead_server_are_reclaimed_after_idle_time(queue):
    queue.submit(make_job(1), max_length=10)
    queue.claim("dead-server", count=1, block_ms=100)
    assert queue.reclaim("survivor", min_idle_ms=10_000, count=8) == []
    time.sleep(0.15)
    [taken] = queue.reclaim("survivor", min_idle_ms=100, count=8)
    assert taken.job.id == "job-1"
    assert taken.deliveries == 2
    queue.reply([(taken, Result.ok([], {}))], result_ttl=5)
    assert queue.wait_result("job-1", timeout=1).success is True


def test_discard_acknowledges_without_answering(queue):
    queue.submit(make_job(1), max_length=10)
    [claimed] = queue.claim("server-a", count=1, block_ms=100)
    queue.discard([claimed.entry_id])
    assert queue.length() == 0
    assert not queue.redis.exists(queue.keys.result("job-1"))


def test_an_unreadable_entry_is_claimed_with_its_error(queue):
    queue.redis.xadd(queue.stream, {"v": "1", "id": "broken"})
    [claimed] = queue.claim("server-a", count=1, block_ms=100)
    assert claimed.job is None
    assert "malformed" in claimed.error


def beat(name: str) -> Heartbeat:
    return Heartbeat(name=name, models=[ServedModel(ModelContract("tiny", "1", 32, 32, 5))])


def test_heartbeats_list_live_servers_and_drop_silent_ones(queue):
    queue.heartbeat(beat("a"), ttl=5)
    queue.heartbeat(beat("b"), ttl=0.2)
    assert {s.name for s in queue.live_servers(ttl=5)} == {"a", "b"}
    time.sleep(0.3)
    assert [s.name for s in queue.live_servers(ttl=5)] == ["a"]
    queue.remove_server("a")
    assert queue.live_servers(ttl=5) == []


def test_a_forged_heartbeat_is_ignored_not_trusted(queue, caplog):
    queue.heartbeat(beat("good"), ttl=5)
    forged = b'{"name": "evil", "models": [{"state": "ready", "contract": {"name": "tiny", "version": "1", ' \
        b'"input_height": -1, "input_width": 10, "classes": 5}}]}'
    queue.redis.set(queue.keys.server("evil"), forged)
    queue.redis.zadd(queue.keys.servers, {"evil": time.time()})
    assert [s.name for s in queue.live_servers(ttl=5)] == ["good"]
    assert "invalid heartbeat" in caplog.text


def test_a_forged_result_record_becomes_a_502_for_its_client(queue):
    queue.redis.rpush(queue.keys.result("job-1"), b'{"success": true, "predictions": "all of them"}')
    answer = queue.wait_result("job-1", timeout=1)
    assert (answer.success, answer.status) == (False, 502)
    assert "could not be read" in answer.error


def test_a_pending_job_reports_its_deadline_until_answered(queue):
    job = make_job(3)
    queue.submit(job, max_length=10, pending_ttl=5)
    assert queue.peek_result("job-3") == (None, job.deadline)
    [claimed] = queue.claim("server-a", count=1, block_ms=100)
    queue.reply([(claimed, Result.ok([], {}))], result_ttl=5)
    result, _ = queue.peek_result("job-3")
    assert result.success is True
    assert queue.peek_result("job-3")[0] is not None  # peeking leaves it for the next ask
    assert queue.peek_result("unknown") == (None, None)


def test_jobs_queued_before_the_group_exists_are_served(redis_client, redis_server):
    q = JobQueue(connect(redis_server.url, 1.0, 10.0), Keys("t2", "images"), "servers").for_model("m", "1")
    q.submit(make_job(5), max_length=10)
    q.ensure_group()
    q.ensure_group()  # idempotent
    [claimed] = q.claim("server-a", count=1, block_ms=100)
    assert claimed.job.id == "job-5"
