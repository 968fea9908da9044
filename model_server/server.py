"""The model server's one run loop: a feeder claims, the model runs, a replier answers."""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from queue import Empty, SimpleQueue
from typing import Any, Mapping

import numpy as np
import redis

from helpers import default_server_name
from jobqueue import Claimed, JobQueue
from model_server.claims import Claimer
from model_server.heartbeat import HeartbeatPublisher
from model_server.inference import BatchRunner
from model_server.replies import Replier
from protocol import Heartbeat

log = logging.getLogger("model_server")

# Reconnect delays while Redis is unreachable: start small so a blip costs little, cap so a long
# outage is noticed within seconds of its end.
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 5.0


class ModelServer:
    """Takes batches of jobs off a `JobQueue`, runs the model once per batch, replies to each."""

    def __init__(self, queue: JobQueue, model: Any, config: Mapping[str, Any], name: str = "",
                 device: str = "") -> None:
        self.queue = queue
        self.model = model
        self.name = name or config.get("MODEL_SERVER_NAME") or default_server_name()
        self.batch_size = int(config["BATCH_SIZE"])
        self.block_ms = int(config["QUEUE_BLOCK_MS"])
        self.claim_idle_ms = int(config["CLAIM_IDLE_MS"])
        self.result_ttl = float(config["RESULT_TTL"])
        self.stopping = threading.Event()
        self.claimer = Claimer(queue, self.name, self.batch_size, int(config["BATCH_WAIT_MS"]), self.block_ms,
                               self.claim_idle_ms)
        self.runner = BatchRunner(model, self.name, int(config["MAX_DELIVERIES"]))
        metadata = model.metadata()
        self.heartbeat = HeartbeatPublisher(queue, Heartbeat(
            name=self.name, model=metadata["model"], input_height=metadata["input_height"],
            input_width=metadata["input_width"], classes=metadata["classes"],
            preprocessing=metadata.get("preprocessing", "unknown"), precision=metadata.get("precision", "float32"),
            host=socket.gethostname(), pid=os.getpid(), device=device or "unknown",
            batch_size=self.batch_size, started=time.time(),
        ), float(config["HEARTBEAT_INTERVAL"]), float(config["HEARTBEAT_TTL"]))

    @property
    def batch_sizes(self) -> dict[int, int]:
        """How many batches of each size the model ran."""
        return dict(self.runner.batch_sizes)

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

    def announce(self) -> None:
        """Publish a heartbeat now, so the web tier sees this server before its first batch."""
        self.heartbeat.beat(**self._figures())

    def stop(self, *_: Any) -> None:
        """Finish and answer what is claimed, then return from `run` (usable as a signal handler)."""
        self.stopping.set()

    def run(self, burst: bool = False) -> None:
        """Serve until `stop` (or, with `burst`, until the queue has nothing more to claim).

        The model runs batch after batch in this thread while two threads do the I/O: a feeder
        claims the next batch while the model runs this one, and a replier publishes a batch's
        answers while the model runs the next. The feeder claims a batch only when the previous
        one has started, so a server holds at most the batch waiting, the batch running and the
        batch being answered. Everything claimed is answered before `run` returns: a stop
        abandons nothing.
        """
        log.info("%s serving %s on %s, batch size %d, wait %d ms", self.name, self.model.name,
                 self.heartbeat.base.device, self.batch_size, self.claimer.batch_wait_ms)
        handover: SimpleQueue[list[Claimed] | None] = SimpleQueue()
        free_slot = threading.Semaphore(1)
        failure: list[BaseException] = []
        feeder = threading.Thread(target=self._feed, args=(handover, free_slot, failure, burst), name="feeder",
                                  daemon=True)
        replier = Replier(self.queue, self.result_ttl)
        feeder.start()
        replier.start()
        try:
            while (batch := self._next_handed_over(handover)) is not None:
                free_slot.release()
                replier.put(self.runner.run(batch))
        finally:
            replier.close()
            feeder.join()
            self.heartbeat.leave()
            log.info("%s stopped", self.name)
        if failure:
            raise failure[0]

    # --- the feeder ---------------------------------------------------------------------
    def _feed(self, handover: SimpleQueue, free_slot: threading.Semaphore, failure: list[BaseException],
              burst: bool) -> None:
        """Claim batches for the model loop until stopped (or drained, in a burst), then hand over None."""
        delay = BACKOFF_FIRST
        try:
            while not self.stopping.is_set():
                try:
                    self.heartbeat.beat_if_due(**self._figures())
                    if not self._claim_next(handover, free_slot) and burst:
                        return
                    delay = BACKOFF_FIRST
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    log.warning("Redis unreachable (%s); retrying in %.1f s", exc, delay)
                    self.stopping.wait(delay)
                    delay = min(delay * 2, BACKOFF_MAX)
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

    def _claim_next(self, handover: SimpleQueue, free_slot: threading.Semaphore) -> bool:
        """Claim one batch once the model has taken the previous one; False when nothing came."""
        # Bounded, so the feeder's heartbeats go on while a slow batch runs.
        if not free_slot.acquire(timeout=self.block_ms / 1000):
            return True
        batch: list[Claimed] = []
        try:
            batch = self.claimer.reclaim_if_due() or self.claimer.next_batch()
        finally:
            if batch:
                handover.put(batch)
            else:
                free_slot.release()
        return bool(batch)

    def _next_handed_over(self, handover: SimpleQueue) -> list[Claimed] | None:
        """The feeder's next batch; one that waited for the model is first topped up."""
        try:
            batch = handover.get_nowait()
        except Empty:
            # The model was idle and the batch was claimed just now: a top-up would only
            # add a Redis round trip to a lone request's latency.
            return handover.get()
        return batch if batch is None else self.claimer.top_up(batch)

    def _figures(self) -> dict[str, Any]:
        return {"batch_sizes": dict(self.runner.batch_sizes), "inference": self.runner.inference,
                "redelivered": self.claimer.redelivered}
