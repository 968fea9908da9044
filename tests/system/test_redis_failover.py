"""Losing Redis with real processes: a SIGKILLed Redis restarted from its append-only file, and a
primary SIGKILLed under a flood with a replica and three Sentinels (Debian's redis-server and
redis-sentinel) while every request goes through Apache.

What must hold: an asynchronous job answered 202 is answered 200 afterwards; a synchronous
request gets 200 or 503 (never a lost connection, never another request's answer); both tiers
find Redis again by themselves. The failover test prints its figures (pytest -s shows them).
"""
from __future__ import annotations

import io
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import requests
from PIL import Image

from tests.support.harness import Stack, wait_until

pytestmark = pytest.mark.faults

PREFIX = "failover"
# A takeover and a failover both end within a few seconds; an answer later than this is lost.
ANSWER_WITHIN = 45


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


def jpeg(seed: int) -> bytes:
    """A distinct 64x48 photo per seed: each gets predictions of its own from the test model."""
    rng = np.random.default_rng(seed)
    pixels = (rng.integers(0, 256, (1, 1, 3)) * np.linspace(0.2, 1, 64)[None, :, None]
              + rng.integers(0, 64, (48, 64, 3))).clip(0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=95)
    return out.getvalue()


def post(stack: Stack, image: bytes, asynchronous: bool = False, timeout: float = 30) -> requests.Response:
    return requests.post(f"{stack.url}/predict{'?async=1' if asynchronous else ''}", files={"image": image},
                         timeout=timeout)


def fetch_results(stack: Stack, job_ids: list[str], within: float) -> dict[str, requests.Response]:
    """Each job's final answer (anything but 202 pending), asking until `within` seconds pass."""
    answers: dict[str, requests.Response] = {}
    deadline = time.monotonic() + within
    while len(answers) < len(job_ids) and time.monotonic() < deadline:
        for job_id in job_ids:
            if job_id in answers:
                continue
            try:
                response = requests.get(f"{stack.url}/result/{job_id}", timeout=10)
            except requests.RequestException:
                continue
            if response.status_code not in (202, 503):
                answers[job_id] = response
        time.sleep(0.2)
    return answers


def _replicates_from(client: redis.Redis, port: int) -> bool:
    """Whether `client`'s server is a caught-up replica of the one on `port` (the Sentinels
    reconfigure it, and drop its clients' connections while they do)."""
    try:
        info = client.info("replication")
    except redis.RedisError:
        return False
    return info.get("master_link_status") == "up" and int(info.get("master_port", 0)) == port


def predictions(response: requests.Response) -> list[tuple[str, float]]:
    return [(p["label"], round(p["probability"], 3)) for p in response.json()["predictions"]]


def test_redis_sigkill_and_restart_from_its_append_only_file_keeps_what_it_accepted(tmp_path, tiny_model_files):
    stack = start_stack(tmp_path, tiny_model_files)
    try:
        queue = stack.model_queue()
        answered = post(stack, jpeg(1), asynchronous=True).json()["id"]
        assert fetch_results(stack, [answered], 20)[answered].status_code == 200
        # Held in the queue: the model server is stopped, so these stay queued, unclaimed.
        stack.signal("model_server", signal.SIGSTOP)
        accepted = []
        for seed in range(10):
            response = post(stack, jpeg(seed), asynchronous=True)
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

        answers = fetch_results(stack, [answered, *accepted], ANSWER_WITHIN)
        assert {job: r.status_code for job, r in answers.items()} == {job: 200 for job in [answered, *accepted]}
        # Both tiers reconnected by themselves: a new synchronous request is answered.
        assert post(stack, jpeg(99)).status_code == 200
        assert "abandoned jobs" in stack.log("model_server")  # the vanished consumer's two
    finally:
        stack.signal("model_server", signal.SIGCONT)
        stack.stop()


class Flood:
    """Synchronous clients (each checks that it gets its own image's answer) and one asynchronous
    submitter, until stopped; every outcome recorded with its time."""

    def __init__(self, stack: Stack, expected: dict[int, list[tuple[str, float]]], clients: int) -> None:
        self.stack, self.expected, self.clients = stack, expected, clients
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.sync: list[tuple[float, float, str]] = []  # (sent, answered, status or error kind)
        self.wrong_answers = 0
        self.accepted: list[str] = []
        self.async_statuses: Counter = Counter()
        self.threads = [threading.Thread(target=self._sync_client, args=(n,)) for n in range(clients)]
        self.threads.append(threading.Thread(target=self._async_client))

    def __enter__(self) -> "Flood":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def _sync_client(self, number: int) -> None:
        seed = number % len(self.expected)
        image = jpeg(seed)
        while not self.stop.is_set():
            sent = time.monotonic()
            try:
                response = post(self.stack, image)
                outcome = str(response.status_code)
                wrong = response.status_code == 200 and predictions(response) != self.expected[seed]
            except requests.RequestException as exc:
                outcome, wrong = type(exc).__name__, False
            with self.lock:
                self.sync.append((sent, time.monotonic(), outcome))
                self.wrong_answers += wrong

    def _async_client(self) -> None:
        seed = 0
        while not self.stop.is_set():
            seed += 1
            try:
                response = post(self.stack, jpeg(seed % 3), asynchronous=True)
                outcome = str(response.status_code)
                if response.status_code == 202:
                    self.accepted.append(response.json()["id"])
            except requests.RequestException as exc:
                outcome = type(exc).__name__
            self.async_statuses[outcome] += 1
            time.sleep(0.05)


def test_primary_sigkill_under_a_flood_fails_over_and_keeps_every_accepted_job(tmp_path, tiny_model_files):
    stack = start_stack(tmp_path, tiny_model_files, sentinel=True, MIN_REPLICAS=1, MIN_REPLICAS_TIMEOUT_MS=500)
    assert stack.replica is not None and stack.sentinels is not None
    try:
        expected = {seed: predictions(post(stack, jpeg(seed))) for seed in range(3)}
        assert len({tuple(p) for p in expected.values()}) == 3, expected  # each image has its own answer
        # MIN_REPLICAS=1: with the replica frozen nothing acknowledges, so nothing is promised.
        stack.replica.process.send_signal(signal.SIGSTOP)
        try:
            refused = post(stack, jpeg(0), asynchronous=True)
        finally:
            stack.replica.process.send_signal(signal.SIGCONT)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1", refused.text
        assert "0 of the 1 Redis replicas" in refused.json()["error"]
        assert post(stack, jpeg(0), asynchronous=True).status_code == 202
        with Flood(stack, expected, clients=6) as flood:
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
        answers = fetch_results(stack, flood.accepted, ANSWER_WITHIN)
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
