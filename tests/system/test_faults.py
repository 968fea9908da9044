"""Fault injection with real processes: Apache, Redis and model servers, flooded while they fail.

Each test reports requests sent, answered ok, answered with an error, lost (no HTTP answer at
all: must be 0) and answered twice (a second result written for a request: must be 0). Every
request of a flood carries one of 8 distinct images and its answer is checked against that
image's own expected probabilities (tests/support/checked_flood.py), so an answer delivered to
the wrong request counts as a failure. Results are kept for RESULT_TTL = 300 s, longer than any
test, so a second answer is still there to be counted at the end. Run alone with
`./test.sh -m faults`.
"""
from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from keras_rest_api import stress
from tests.support import checked_flood
from tests.support.harness import Stack, wait_until

pytestmark = pytest.mark.faults

PREFIX = "faults"
LOST = ("ConnectionError", "Timeout", stress.NO_ANSWER)


def start_stack(workdir: Path, model_files: dict[str, str], servers: int, **overrides: Any) -> Stack:
    settings = {
        **model_files, "KEY_PREFIX": PREFIX, "BATCH_SIZE": 8, "BATCH_WAIT_MS": 0, "QUEUE_BLOCK_MS": 200,
        "CLAIM_IDLE_MS": 1000, "HEARTBEAT_INTERVAL": 0.5, "HEARTBEAT_TTL": 3, "REQUEST_TIMEOUT": 15,
        "RESULT_TTL": 300, "WSGI_PROCESSES": 2, "WSGI_THREADS": 16, "MAX_QUEUE_LENGTH": 2000, **overrides,
    }
    stack = Stack(workdir, settings)
    try:
        stack.start(model_servers=servers)
    except BaseException:
        stack.stop()
        raise
    return stack


def report(name: str, summary: dict[str, Any], twice: int) -> dict[str, int]:
    """The figures each fault test asserts on, printed for the record (pytest -s shows them)."""
    lost = sum(summary["failures"].get(kind, 0) for kind in LOST)
    figures = {"sent": summary["sent"], "ok": summary["ok"], "error": summary["failed"] - lost,
               "lost": lost, "twice": twice}
    print(f"\n[{name}] " + "  ".join(f"{k} {v}" for k, v in figures.items()) + f"  failures {summary['failures']}")
    return figures


def results_left(stack: Stack) -> int:
    """Answers nobody collected: after a flood whose clients all got their 200 (or were refused
    before anything was queued), each is a second answer to a request that was already answered.
    Each answer is an element of its request's result list (RPUSH), so the lists' lengths count
    them, however close the two came. A request that timed out also leaves its late answer here,
    so the tests assert on this figure only after asserting that no request did."""
    queue = stack.queue()
    return sum(queue.redis.llen(key) for key in queue.redis.scan_iter(match=queue.keys.all_results, count=1000))


def claims_of(stack: Stack, consumer: str) -> int:
    """How many images `consumer` has claimed and not answered yet (XPENDING)."""
    queue = stack.model_queue()
    pending = queue.redis.xpending(queue.stream, queue.group)
    return sum(c["pending"] for c in pending["consumers"] or [] if c["name"] == consumer.encode())


def holds_claims(stack: Stack, consumer: str) -> bool:
    """Whether `consumer` has claimed images it has not answered yet."""
    return claims_of(stack, consumer) > 0


@pytest.fixture(scope="module")
def slow_images(slow_model_files) -> tuple[list[bytes], list[dict[str, float]]]:
    """8 distinct images and each one's expected probabilities under the slow model."""
    images = checked_flood.distinct_images(8)
    return images, checked_flood.expected_answers(slow_model_files, images)


def served_by(stack: Stack) -> Counter:
    """Batches each live model server ran, from their heartbeats."""
    return Counter({s.name: sum(s.batch_sizes.values()) for s in stack.queue().live_servers(ttl=10)})


def flood(stack: Stack, images, requests_total: int = 150, interval: float = 0.02) -> dict:
    """A flood of the 8 images, each answer checked against its own image's expected result."""
    return checked_flood.flood(f"{stack.url}/predict", *images, requests_total=requests_total, interval=interval,
                               timeout=30)


def flood_while(stack: Stack, images, fault, requests_total: int = 150, interval: float = 0.02) -> dict:
    """Flood the service, running `fault` in a thread once the flood is under way."""
    injector = threading.Thread(target=fault)
    timer = threading.Timer(requests_total * interval / 3, injector.start)
    timer.start()
    try:
        return flood(stack, images, requests_total=requests_total, interval=interval)
    finally:
        timer.join()
        if injector.is_alive() or injector.ident:
            injector.join(30)


def test_sigkill_mid_flood_loses_nothing(tmp_path, slow_model_files, slow_images):
    # CLAIM_IDLE_MS at its default: at 1 s, on two loaded cores (batches of 8 in 1.3 s), the
    # survivor also took over its own batches still waiting for the model and answered 72 of 150
    # requests twice (counted once answers were kept past the test; at RESULT_TTL=5 they expired).
    stack = start_stack(tmp_path, slow_model_files, servers=2, CLAIM_IDLE_MS=5000)
    try:
        def kill_while_it_holds_a_batch() -> None:
            wait_until(lambda: holds_claims(stack, "model_server"), 10, "model_server to claim a batch")
            stack.signal("model_server", signal.SIGKILL)

        summary = flood_while(stack, slow_images, kill_while_it_holds_a_batch)
        twice = results_left(stack)
        figures = report("sigkill", summary, twice)
        assert stack.model_server.wait(5) == -signal.SIGKILL
        assert figures["ok"] == figures["sent"], summary["failure_examples"]
        assert figures["lost"] == 0 and figures["twice"] == 0
        # The killed server had a batch in hand: the survivor answered it.
        assert "abandoned jobs" in stack.log("model_server1")
    finally:
        stack.stop()


def test_three_servers_share_a_flood(tmp_path, slow_model_files, slow_images):
    # No server dies here, so no job may be taken over: CLAIM_IDLE_MS at its default, well over a
    # batch. At the 1 s the takeover tests use, three servers on two cores ran a batch of 8 in
    # 550-600 ms, warned that this is too close, and took over each other's waiting batches.
    stack = start_stack(tmp_path, slow_model_files, servers=3, CLAIM_IDLE_MS=5000)
    try:
        summary = flood(stack, slow_images, requests_total=150, interval=0.01)
        time.sleep(1)  # one heartbeat, so the batch counts are current
        figures = report("three servers", summary, results_left(stack))
        assert figures["ok"] == figures["sent"] and figures["twice"] == 0, summary["failure_examples"]
        shares = served_by(stack)
        assert len(shares) == 3 and all(count > 0 for count in shares.values()), shares
        for server in shares:  # the servers' names are their process names in the stack
            assert "close to CLAIM_IDLE_MS" not in stack.log(server), stack.log(server)[-2000:]
    finally:
        stack.stop()


def test_sigterm_finishes_the_batch_in_hand(tmp_path, slow_model_files, slow_images):
    # A stopped server answers what it claimed; no job may be taken over from it meanwhile, so
    # CLAIM_IDLE_MS at its default (at 1 s, batches of 550-600 ms on two cores were taken over
    # while still waiting, and 7 requests were answered twice in one CI run).
    stack = start_stack(tmp_path, slow_model_files, servers=2, CLAIM_IDLE_MS=5000)
    held_at_signal: list[int] = []
    left_at_exit: list[int] = []
    try:
        def stop_while_it_holds_a_batch() -> None:
            wait_until(lambda: holds_claims(stack, "model_server"), 10, "model_server to claim a batch")
            stack.signal("model_server", signal.SIGTERM)
            held_at_signal.append(claims_of(stack, "model_server"))
            stack.model_server.wait(20)
            # At once, before a takeover could be due (CLAIM_IDLE_MS): what it left unanswered.
            left_at_exit.append(claims_of(stack, "model_server"))

        summary = flood_while(stack, slow_images, stop_while_it_holds_a_batch)
        figures = report("sigterm", summary, results_left(stack))
        print(f"[sigterm] claims held at the signal {held_at_signal}, left at exit {left_at_exit}")
        assert stack.model_server.wait(10) == 0
        assert held_at_signal and held_at_signal[0] > 0
        assert left_at_exit == [0], "the stopped server left claimed images unanswered"
        assert figures["ok"] == figures["sent"] and figures["twice"] == 0, summary["failure_examples"]
        assert "stopped" in stack.log("model_server")
        # The survivor took nothing over from it.
        time.sleep(1)  # one heartbeat, so its figures are current
        survivor = {s.name: s for s in stack.queue().live_servers(ttl=10)}["model_server1"]
        assert survivor.redelivered == 0 and "took over" not in stack.log("model_server1"), \
            stack.log("model_server1")[-2000:]
    finally:
        stack.stop()


def test_redis_restart_mid_flood(tmp_path, slow_model_files, slow_images):
    stack = start_stack(tmp_path, slow_model_files, servers=1)

    def restart_redis() -> None:
        stack.redis.stop()
        time.sleep(1.0)
        stack.redis.start()

    try:
        summary = flood_while(stack, slow_images, restart_redis, requests_total=200, interval=0.02)
        figures = report("redis restart", summary, results_left(stack))
        # Requests caught by the outage are answered 503/504 JSON; none hangs or goes unanswered.
        assert figures["lost"] == 0
        assert set(summary["failures"]) <= {"503", "504"}, summary["failure_examples"]
        assert figures["ok"] > 0
        # Both tiers recover without a restart.
        after = flood(stack, slow_images, requests_total=20, interval=0.05)
        assert after["ok"] == 20, after["failure_examples"]
        assert "Redis unreachable" in stack.log("model_server")
    finally:
        stack.stop()


def test_timeouts_leave_nothing_behind(tmp_path, slow_model_files, slow_images):
    stack = start_stack(tmp_path, slow_model_files, servers=1, REQUEST_TIMEOUT=2, RESULT_TTL=2)
    client = redis.Redis.from_url(stack.redis.url)
    try:
        baseline = client.info("memory")["used_memory"]
        stack.signal("model_server", signal.SIGSTOP)
        try:
            summary = flood(stack, slow_images, requests_total=60, interval=0.01)
        finally:
            stack.signal("model_server", signal.SIGCONT)
        figures = report("sigstop storm", summary, 0)
        assert summary["failures"] == {"504": 60} and figures["lost"] == 0
        queue_key = stack.model_queue().stream
        # The model server skips every expired request instead of answering into the void.
        wait_until(lambda: client.xlen(queue_key) == 0, 10, "the expired requests to be dropped")
        time.sleep(2.5)  # RESULT_TTL
        assert list(client.scan_iter(match=stack.queue().keys.all_results)) == []
        assert client.info("memory")["used_memory"] < baseline + 512 * 1024
    finally:
        stack.stop()


def test_apache_graceful_restart_under_load_drops_nothing(tmp_path, slow_model_files, slow_images):
    stack = start_stack(tmp_path, slow_model_files, servers=1)
    try:
        # SIGUSR1 to Apache's parent is `apachectl graceful` (what `service apache2 reload` sends).
        summary = flood_while(stack, slow_images, lambda: stack.processes["apache"].send_signal(signal.SIGUSR1))
        figures = report("apache graceful restart", summary, results_left(stack))
        assert figures["lost"] == 0
        # A request that reaches Apache in the instant mod_wsgi re-creates its daemon socket is
        # refused by mod_wsgi (ENOENT is not retried) with a 503, JSON with our error document;
        # seen for about 1 request in 450. Anything else is a failure. Such a request was never
        # queued, so it leaves no answer behind: every answer left is a second one.
        assert set(summary["failures"]) <= {"503"} and figures["error"] <= 2, summary["failure_examples"]
        assert figures["twice"] == 0
        assert "resuming normal operations" in stack.log("apache").split("SIGUSR1")[-1]
    finally:
        stack.stop()


def test_more_clients_than_apache_has_threads_are_all_answered(tmp_path, tiny_model_files):
    # Apache (mod_wsgi-express: 7 children x 17 threads) closes the idle keep-alive connections of
    # a child whose threads are all busy; a client reusing one at that instant got "connection
    # closed without response" (485 of 2,151 requests at 128 clients before keep-alive was off).
    clients = 160
    stack = start_stack(tmp_path, tiny_model_files, servers=1, WSGI_THREADS=32)
    try:
        images = checked_flood.distinct_images(8)
        summary = checked_flood.closed_loop(f"{stack.url}/predict", images,
                                            checked_flood.expected_answers(tiny_model_files, images),
                                            concurrency=clients, duration=6, timeout=30)
    finally:
        stack.stop()
    figures = report(f"{clients} clients", summary, twice=0)
    assert figures["ok"] > clients
    assert summary["failed"] == 0, summary["failure_examples"]
