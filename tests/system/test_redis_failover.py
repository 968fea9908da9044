"""Losing Redis with real processes: a SIGKILLed Redis restarted from its append-only file, and a
primary SIGKILLed under a flood with a replica and three Sentinels (Debian's redis-server and
redis-sentinel) while every request goes through Apache.

What must hold: an asynchronous job answered 202 is answered 200 afterwards; a synchronous
request gets 200 or 503 (never a lost connection, never another request's answer); both tiers
find Redis again by themselves. The failover test prints its figures (pytest -s shows them).
"""
from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.failover_flood import ANSWER_WITHIN, Flood, fetch_results, jpeg, post, predictions
from tests.support.harness import Stack, wait_until

pytestmark = pytest.mark.faults

PREFIX = "failover"


def start_stack(workdir: Path, model_files: dict[str, str], **overrides: Any) -> Stack:
    settings = {**model_files, "KEY_PREFIX": PREFIX, "BATCH_SIZE": 8, "QUEUE_BLOCK_MS": 200, "CLAIM_IDLE_MS": 1000,
                "HEARTBEAT_INTERVAL": 0.5, "HEARTBEAT_TTL": 3, "REQUEST_TIMEOUT": 20, "RESULT_TTL": 120,
                "WSGI_PROCESSES": 2, "WSGI_THREADS": 16, **overrides}
    sentinel = bool(settings.pop("sentinel", False))
    stack = Stack(workdir, settings, sentinel=sentinel)
    try:
        stack.start()
    except BaseException:
        stack.stop()
        raise
    return stack


def _replicates_from(client: redis.Redis, port: int) -> bool:
    """Whether `client`'s server is a caught-up replica of the one on `port` (the Sentinels
    reconfigure it, and drop its clients' connections while they do)."""
    try:
        info = client.info("replication")
    except redis.RedisError:
        return False
    return info.get("master_link_status") == "up" and int(info.get("master_port", 0)) == port


def test_redis_sigkill_and_restart_from_its_append_only_file_keeps_what_it_accepted(tmp_path, tiny_model_files):
    stack = start_stack(tmp_path, tiny_model_files)
    try:
        queue = stack.model_queue()
        answered = post(stack.url, jpeg(1), asynchronous=True).json()["id"]
        assert fetch_results(stack.url, [answered], 20)[answered].status_code == 200
        # Held in the queue: the model server is stopped, so these stay queued, unclaimed.
        stack.signal("model_server", signal.SIGSTOP)
        accepted = []
        for seed in range(10):
            response = post(stack.url, jpeg(seed), asynchronous=True)
            assert response.status_code == 202, response.text
            accepted.append(response.json()["id"])
        # Two of them claimed by a consumer that then vanished: pending entries, taken over later.
        queue.redis.xreadgroup(queue.group, "vanished", {queue.stream: ">"}, count=2)
        before = queue.redis.xpending(queue.stream, queue.group)["pending"], queue.redis.xlen(queue.stream)
        time.sleep(1.5)  # appendfsync everysec: what was accepted a second ago is on disk

        stack.redis.kill()
        stack.redis.start()
        after = queue.redis.xpending(queue.stream, queue.group)["pending"], queue.redis.xlen(queue.stream)
        # (The stopped server's blocked XREADGROUP may have been handed one more: Redis serves it.)
        assert before[0] >= 2 and before[1] == 10 and after == before
        stack.signal("model_server", signal.SIGCONT)

        answers = fetch_results(stack.url, [answered, *accepted], ANSWER_WITHIN)
        assert {job: r.status_code for job, r in answers.items()} == {job: 200 for job in [answered, *accepted]}
        # Both tiers reconnected by themselves: a new synchronous request is answered.
        assert post(stack.url, jpeg(99)).status_code == 200
        assert "abandoned jobs" in stack.log("model_server")  # the vanished consumer's two
    finally:
        stack.signal("model_server", signal.SIGCONT)
        stack.stop()


def test_primary_sigkill_under_a_flood_fails_over_and_keeps_every_accepted_job(tmp_path, tiny_model_files):
    stack = start_stack(tmp_path, tiny_model_files, sentinel=True, MIN_REPLICAS=1, MIN_REPLICAS_TIMEOUT_MS=500)
    assert stack.replica is not None and stack.sentinels is not None
    try:
        expected = {seed: predictions(post(stack.url, jpeg(seed))) for seed in range(3)}
        assert len({tuple(p) for p in expected.values()}) == 3, expected  # each image has its own answer
        # MIN_REPLICAS=1: with the replica frozen nothing acknowledges, so nothing is promised.
        stack.replica.process.send_signal(signal.SIGSTOP)
        try:
            refused = post(stack.url, jpeg(0), asynchronous=True)
        finally:
            stack.replica.process.send_signal(signal.SIGCONT)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1", refused.text
        assert "0 of the 1 Redis replicas" in refused.json()["error"]
        assert post(stack.url, jpeg(0), asynchronous=True).status_code == 202
        with Flood(stack.url, expected, clients=6) as flood:
            time.sleep(5)
            # For a second before the kill nothing is answered, so every synchronous client is
            # waiting on its job when the primary dies (what re-queueing is for).
            stack.signal("model_server", signal.SIGSTOP)
            time.sleep(1.0)
            killed_at = time.monotonic()
            stack.redis.kill()
            stack.signal("model_server", signal.SIGCONT)
            wait_until(lambda: stack.sentinels.primary_port() == stack.replica.port, 30, "the Sentinels' failover")
            failed_over_at = time.monotonic()
            time.sleep(8)
        # The old primary comes back from its own (stale) append-only file: the Sentinels make it a
        # replica of the new primary, which it copies; nothing accepted may be lost by that.
        stack.redis.start()
        replica_client = stack.redis.client()
        wait_until(lambda: _replicates_from(replica_client, stack.replica.port), 30,
                   "the old primary to rejoin as a replica")
        statuses = Counter(outcome for _, _, outcome in flood.sync)
        # Waiting when the primary died: their web process queued them again on the new one. (A
        # 200 a second after the kill cannot come from the dead primary.)
        carried_over = Counter(outcome for sent, answered, outcome in flood.sync
                               if sent < killed_at and answered > killed_at + 1.0)
        # The gap: from the kill to the first 200 answering a request sent after it.
        first_ok = min(answered for sent, answered, outcome in flood.sync if sent > killed_at and outcome == "200")
        answers = fetch_results(stack.url, flood.accepted, ANSWER_WITHIN)
        lost = [job for job in flood.accepted if job not in answers or answers[job].status_code != 200]
        result_keys = [stack.queue().keys.result(job) for job in flood.accepted]
        try:  # the last answers may still be on their way to the replica
            wait_until(lambda: replica_client.exists(*result_keys) == len(result_keys), 10, "the replica to catch up")
        except AssertionError:
            pass
        copied = replica_client.exists(*result_keys)
        queue = stack.queue()
        run_twice = sum(1 for job in flood.accepted if queue.redis.llen(queue.keys.result(job)) > 1)
        print(f"\n[failover] sentinel failover {failed_over_at - killed_at:.1f} s, first 200 after the kill "
              f"{first_ok - killed_at:.1f} s; sync answers {dict(statuses)}, of those waiting through the "
              f"failover {dict(carried_over)}; wrong answers {flood.wrong_answers}; "
              f"async {dict(flood.async_statuses)}, accepted {len(flood.accepted)}, lost {len(lost)}, "
              f"run twice (answered once) {run_twice}; results on the rejoined old primary {copied}")
        assert set(statuses) <= {"200", "503"}, statuses
        assert flood.wrong_answers == 0
        assert set(flood.async_statuses) <= {"202", "503"}, flood.async_statuses
        assert flood.accepted and lost == [], lost
        assert copied == len(flood.accepted)
        assert carried_over["200"] > 0 and "queueing the job again" in stack.log("apache")
        assert first_ok - killed_at < 15
    finally:
        stack.signal("model_server", signal.SIGCONT)
        stack.stop()
