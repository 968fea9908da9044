"""The model server: loads the model once, classifies queued images in batches, answers each one.

Run it as a daemon: `python run_model_server.py`. Several may share one Redis (one per GPU,
several machines): the consumer group gives each queued image to exactly one of them, and an
image claimed by a server that died is taken over by another once it has been idle for
CLAIM_IDLE_MS.

A batch runs when it is full (BATCH_SIZE) or when BATCH_WAIT_MS has passed since its first
image arrived, whichever comes first. Every wait is a blocking Redis call with a timeout.
"""
from __future__ import annotations

import collections
import itertools
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from queue import Empty, Queue, SimpleQueue
from typing import Any, Mapping, Sequence

import numpy as np
import redis

import settings
from helpers import INFERENCE_BUCKETS, configure_logging, default_server_name, error_result, success_result
from jobqueue import Claimed, JobQueue, queue_from_settings

log = logging.getLogger("model_server")

# Reconnect delays while Redis is unreachable: start small so a blip costs little, cap so a long
# outage is noticed within seconds of its end.
_BACKOFF_FIRST, _BACKOFF_MAX = 0.1, 5.0


@dataclass
class Outcome:
    """A batch after the model ran: each job's answer, and entries acknowledged without one."""

    batch_id: str
    answers: list[tuple[Claimed, dict[str, Any]]]
    dropped: list[bytes]


class ModelServer:
    """Takes batches of jobs off a `JobQueue`, runs the model once per batch, replies to each."""

    def __init__(self, queue: JobQueue, model: Any, config: Mapping[str, Any], name: str = "") -> None:
        self.queue = queue
        self.model = model
        self.name = name or config.get("MODEL_SERVER_NAME") or default_server_name()
        self.batch_size = int(config["BATCH_SIZE"])
        self.batch_wait_ms = int(config["BATCH_WAIT_MS"])
        self.block_ms = int(config["QUEUE_BLOCK_MS"])
        self.claim_idle_ms = int(config["CLAIM_IDLE_MS"])
        self.max_deliveries = int(config["MAX_DELIVERIES"])
        self.heartbeat_interval = float(config["HEARTBEAT_INTERVAL"])
        self.heartbeat_ttl = float(config["HEARTBEAT_TTL"])
        self.result_ttl = float(config["RESULT_TTL"])
        self.stopping = threading.Event()
        self.batches = itertools.count(1)
        # How many batches of each size ran; published with the heartbeat for the benchmark.
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self.inference = {"buckets": [0] * len(INFERENCE_BUCKETS), "sum": 0.0, "count": 0}
        self.redelivered = 0
        self._next_heartbeat = 0.0
        self._next_reclaim = 0.0
        self._info = {
            **model.metadata(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "device": describe_device(),
            "batch_size": self.batch_size,
            "started": time.time(),
        }

    # --- lifecycle ----------------------------------------------------------------------
    def warm_up(self) -> None:
        """Run the model once per batch shape it will see, so no client pays for tracing."""
        height, width = self.model.input_size
        for size in sorted({1, 2, self.batch_size}):
            started = time.perf_counter()
            self.model.predict(np.zeros((size, height, width, 3), dtype=np.uint8))
            log.info("warm-up: batch of %d in %.0f ms", size, (time.perf_counter() - started) * 1000)
        started = time.perf_counter()  # once more, now that it is traced, for its true cost
        self.model.predict(np.zeros((self.batch_size, height, width, 3), dtype=np.uint8))
        elapsed_ms = (time.perf_counter() - started) * 1000
        # A job stays claimed while it waits for the model, runs, and is replied to.
        if elapsed_ms * 4 > self.claim_idle_ms:
            log.warning("a full batch takes %.0f ms, close to CLAIM_IDLE_MS=%d: another server may take "
                        "over batches still running here; raise CLAIM_IDLE_MS", elapsed_ms, self.claim_idle_ms)

    def run(self) -> None:
        """Serve until `stop`: the model runs batch after batch while two threads do the I/O.

        A feeder thread forms the next batch while the model runs this one, and a replier
        thread publishes a batch's answers while the model runs the next, so between two
        batches the model waits only for the top-up. The feeder claims a batch only when the
        previous one has started, so a server holds at most the batch waiting, the batch
        running and the batches being answered. Everything claimed is answered before `run`
        returns: a stop abandons nothing.
        """
        log.info("%s serving %s on %s, batch size %d, wait %d ms", self.name, self._info["model"],
                 self._info["device"], self.batch_size, self.batch_wait_ms)
        handover: SimpleQueue[list[Claimed] | None] = SimpleQueue()
        # One batch may wait for the replier: if Redis is slow to take answers, the model stops
        # rather than run ahead with claimed jobs that another server would soon take over.
        outbox: Queue[Outcome | None] = Queue(maxsize=1)
        free_slot = threading.Semaphore(1)
        failure: list[BaseException] = []
        feeder = threading.Thread(target=self._feed, args=(handover, free_slot, failure), name="feeder", daemon=True)
        replier = threading.Thread(target=self._reply_all, args=(outbox,), name="replier", daemon=True)
        feeder.start()
        replier.start()
        while (batch := self._next_handed_over(handover)) is not None:
            free_slot.release()
            outbox.put(self.run_batch(batch))
        outbox.put(None)
        feeder.join()
        replier.join()
        self._leave()
        if failure:
            raise failure[0]

    def _next_handed_over(self, handover: SimpleQueue) -> list[Claimed] | None:
        """The feeder's next batch; one that waited for the model is first topped up."""
        try:
            batch = handover.get_nowait()
        except Empty:
            # The model was idle and the batch was claimed just now: a top-up would only
            # add a Redis round trip to a lone request's latency.
            return handover.get()
        return batch if batch is None else self._top_up(batch)

    def _reply_all(self, outbox: Queue) -> None:
        while (outcome := outbox.get()) is not None:
            try:
                self.send(outcome)
            except Exception:  # the replier must outlive one bad batch, or the model loop would block on the outbox
                log.exception("batch %s: replying failed; its jobs will be taken over", outcome.batch_id)

    def _feed(self, handover: SimpleQueue, free_slot: threading.Semaphore, failure: list[BaseException]) -> None:
        """Claim batches for the model loop until stopped, then hand over None."""
        delay = _BACKOFF_FIRST
        try:
            while not self.stopping.is_set():
                try:
                    self._heartbeat_if_due()
                    self._claim_next(handover, free_slot)
                    delay = _BACKOFF_FIRST
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    log.warning("Redis unreachable (%s); retrying in %.1f s", exc, delay)
                    self.stopping.wait(delay)
                    delay = min(delay * 2, _BACKOFF_MAX)
                except redis.ResponseError as exc:
                    if "NOGROUP" not in str(exc):
                        raise
                    # Redis restarted without persistence: the stream and group are gone.
                    log.warning("consumer group missing (Redis restarted?); recreating it")
                    self.queue.ensure_group()
        except BaseException as exc:  # surfaces in run(), after what was claimed is processed
            log.exception("the feeder failed")
            failure.append(exc)
        finally:
            handover.put(None)

    def _top_up(self, batch: list[Claimed]) -> list[Claimed]:
        """Fill a batch that waited for the model with the jobs that arrived meanwhile."""
        if len(batch) < self.batch_size:
            try:
                batch.extend(self.queue.claim(self.name, self.batch_size - len(batch), block_ms=None))
            except redis.RedisError as exc:  # the batch in hand still runs
                log.warning("could not top up a batch of %d: %s", len(batch), exc)
        return batch

    def _claim_next(self, handover: SimpleQueue, free_slot: threading.Semaphore) -> None:
        # Bounded, so the feeder's heartbeats go on while a slow batch runs.
        if not free_slot.acquire(timeout=self.block_ms / 1000):
            return
        batch: list[Claimed] = []
        try:
            batch = self._reclaim_if_due() or self.next_batch()
        finally:
            if batch:
                handover.put(batch)
            else:
                free_slot.release()

    def stop(self, *_: Any) -> None:
        """Finish the batch in hand, then return from `run`."""
        self.stopping.set()

    def _leave(self) -> None:
        try:
            self.queue.remove_server(self.name)
        except redis.RedisError as exc:
            log.warning("could not remove heartbeat on exit: %s", exc)
        log.info("%s stopped", self.name)

    # --- one turn of the loop -----------------------------------------------------------
    def serve_once(self) -> int:
        """One turn, without overlap: heartbeat and takeover if due, then one batch. For tests."""
        self._heartbeat_if_due()
        handled = 0
        for batch in (self._reclaim_if_due(), self.next_batch()):
            if batch:
                self.process(batch)
                handled += len(batch)
        return handled

    def next_batch(self) -> list[Claimed]:
        """Block for the first job, then gather more until the batch is full or its window ends."""
        batch = self.queue.claim(self.name, self.batch_size, block_ms=self.block_ms)
        if not batch or self.batch_wait_ms <= 0:
            return batch
        window_ends = time.monotonic() + self.batch_wait_ms / 1000
        while len(batch) < self.batch_size:
            remaining_ms = int((window_ends - time.monotonic()) * 1000)
            # XREADGROUP's BLOCK 0 means forever, so a spent window reads without blocking.
            more = self.queue.claim(self.name, self.batch_size - len(batch),
                                    block_ms=remaining_ms if remaining_ms >= 1 else None)
            if not more:
                break
            batch.extend(more)
        return batch

    def process(self, batch: Sequence[Claimed]) -> None:
        """Classify the live jobs of `batch` in one model call and reply to every job in it."""
        self.send(self.run_batch(batch))

    def run_batch(self, batch: Sequence[Claimed]) -> Outcome:
        """Classify the live jobs of `batch` in one model call: the answers, and the entries to drop."""
        batch_id = f"{self.name}#{next(self.batches)}"
        runnable, answers, dropped = self._triage(batch, batch_id)
        if runnable:
            answers.extend(self._classify(runnable, batch_id))
        return Outcome(batch_id, answers, dropped)

    def send(self, outcome: Outcome) -> None:
        """Publish a batch's answers and acknowledge its entries."""
        try:
            self.queue.reply(outcome.answers, self.result_ttl)
            self.queue.discard(outcome.dropped)
        except redis.RedisError as exc:
            # Its jobs stay claimed in Redis; a server takes them over after CLAIM_IDLE_MS.
            log.warning("batch %s: could not reply to %d jobs (%s); they will be taken over",
                        outcome.batch_id, len(outcome.answers) + len(outcome.dropped), exc)
            return
        log.debug("batch %s: %d answered, %d dropped", outcome.batch_id, len(outcome.answers), len(outcome.dropped))

    def _triage(self, batch: Sequence[Claimed], batch_id: str) -> tuple[list[Claimed], list, list[bytes]]:
        """Split a batch into jobs to run, jobs answered without running, and entries to drop."""
        now = time.time()
        expected = (*self.model.input_size, 3)
        runnable: list[Claimed] = []
        answers: list[tuple[Claimed, dict[str, Any]]] = []
        dropped: list[bytes] = []
        for claimed in batch:
            job = claimed.job
            if job is None:
                log.error("batch %s: dropping unreadable entry %s: %s", batch_id, claimed.entry_id, claimed.error)
                dropped.append(claimed.entry_id)
            elif job.deadline < now:
                # Its client was already answered 504; running it would only delay the living.
                log.info("batch %s: skipping job %s, %.1f s past its deadline", batch_id, job.id, now - job.deadline)
                if job.fetch_later:  # someone may still ask GET /result: tell them
                    answers.append((claimed, error_result(
                        "The job expired in the queue before a model server could take it. Submit it again.", 504)))
                else:
                    dropped.append(claimed.entry_id)
            elif claimed.deliveries > self.max_deliveries:
                log.error("batch %s: job %s delivered %d times; giving up on it", batch_id, job.id, claimed.deliveries)
                answers.append((claimed, error_result(
                    f"This image was attempted {claimed.deliveries} times and each attempt ended its model "
                    "server; it is not processed again. Check the image, or report it with its request id.",
                    422)))
            elif job.pixels.shape != expected:
                answers.append((claimed, error_result(
                    f"The image was prepared as {job.pixels.shape} but the model now expects {expected} "
                    "(the model changed). Retry the request.", 503)))
            else:
                runnable.append(claimed)
        return runnable, answers, dropped

    def _classify(self, runnable: Sequence[Claimed], batch_id: str) -> list[tuple[Claimed, dict[str, Any]]]:
        started_wall, started = time.time(), time.perf_counter()
        try:
            probabilities = self.model.predict(np.stack([claimed.job.pixels for claimed in runnable]))
        except Exception as exc:
            log.exception("batch %s: the model failed on %d images", batch_id, len(runnable))
            message = (f"The model failed on this image's batch ({type(exc).__name__}: {exc}); "
                       f"batch id {batch_id}. Retry; if it persists, contact the operator.")
            return [(claimed, error_result(message, 500)) for claimed in runnable]
        inference_ms = (time.perf_counter() - started) * 1000
        self._count_batch(len(runnable), inference_ms / 1000)
        log.debug("batch %s: %d images in %.1f ms", batch_id, len(runnable), inference_ms)
        answers = []
        for claimed, row in zip(runnable, probabilities):
            timing = {"queue": max(0.0, (started_wall - claimed.job.enqueued_at) * 1000), "inference": inference_ms,
                      "batch": float(len(runnable))}
            answers.append((claimed, success_result(top_predictions(row, self.model.labels, claimed.job.top_k), timing)))
        return answers

    def _count_batch(self, size: int, seconds: float) -> None:
        """Cumulative figures for /metrics, published with the heartbeat."""
        self.batch_sizes[size] += 1
        for i, bound in enumerate(INFERENCE_BUCKETS):
            if seconds <= bound:
                self.inference["buckets"][i] += 1
        self.inference["sum"] += seconds
        self.inference["count"] += 1

    def _heartbeat_if_due(self) -> None:
        now = time.monotonic()
        if now >= self._next_heartbeat:
            figures = {"batch_sizes": dict(self.batch_sizes), "inference": self.inference,
                       "redelivered": self.redelivered}
            self.queue.heartbeat(self.name, {**self._info, **figures}, self.heartbeat_ttl)
            self._next_heartbeat = now + self.heartbeat_interval

    def _reclaim_if_due(self) -> list[Claimed]:
        now = time.monotonic()
        if now < self._next_reclaim:
            return []
        self._next_reclaim = now + min(self.claim_idle_ms / 2000, 5.0)
        taken = self.queue.reclaim(self.name, self.claim_idle_ms, self.batch_size)
        if taken:
            self.redelivered += len(taken)
            log.warning("took over %d abandoned jobs", len(taken))
        return taken


def top_predictions(probabilities: np.ndarray, labels: Sequence[str], k: int) -> list[dict[str, Any]]:
    """The `k` most probable classes, highest first, in the tutorial's format."""
    k = min(k, len(probabilities))
    top = np.argpartition(-probabilities, k - 1)[:k]
    top = top[np.argsort(-probabilities[top], kind="stable")]
    return [{"label": labels[i], "probability": float(probabilities[i])} for i in top]


def describe_device() -> str:
    """Where Keras runs the model: a GPU when the backend sees one, else the CPU."""
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            return f"tensorflow:{gpus[0].name}" if gpus else "tensorflow:CPU"
        if backend == "jax":
            import jax

            return f"jax:{jax.devices()[0]}"
        if backend == "torch":
            import torch

            return f"torch:cuda:{torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "torch:CPU"
    except Exception as exc:  # describing the device must never stop the server
        log.debug("could not describe the device: %s", exc)
    return f"{backend}:unknown"


def build_server(config: Mapping[str, Any]) -> ModelServer:
    """Load the configured model and connect to Redis, waiting (with backoff) for Redis to answer."""
    from models import load_model

    model = load_model(config)
    queue = queue_from_settings(config, read_timeout=config["QUEUE_BLOCK_MS"] / 1000 + 5.0)
    server = ModelServer(queue, model, config)
    delay = _BACKOFF_FIRST
    while True:
        try:
            queue.ensure_group()
            return server
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("Redis at %s unreachable (%s); retrying in %.1f s", config["REDIS_URL"], exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX)


def settings_dict() -> dict[str, Any]:
    """The settings module as a plain mapping."""
    return {name: getattr(settings, name) for name in dir(settings) if name.isupper()}


def main() -> int:
    configure_logging(settings.LOG_LEVEL)
    from models import ModelLoadError

    try:
        server = build_server(settings_dict())
    except ModelLoadError as exc:
        log.error("cannot start: %s", exc)
        return 2
    signal.signal(signal.SIGTERM, server.stop)
    signal.signal(signal.SIGINT, server.stop)
    server.warm_up()
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
