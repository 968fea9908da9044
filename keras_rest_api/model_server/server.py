"""The model server's one run loop: a feeder claims, the model runs, a replier answers."""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from queue import Empty, SimpleQueue
from typing import Any, Mapping, Sequence

import redis

from keras_rest_api.ids import default_server_name
from keras_rest_api.queue.jobs import JobQueue, lost_primary
from keras_rest_api.model_server.claims import Batch, Claimer
from keras_rest_api.model_server.inference import blank_input
from keras_rest_api.model_server.heartbeat import HeartbeatPublisher
from keras_rest_api.model_server.versions import FixedSource, VersionSet, ModelSource, ServedVersion
from keras_rest_api.model_server.replies import Replier
from keras_rest_api.models.backends import warm_up_sizes
from keras_rest_api.queue.records import Heartbeat

log = logging.getLogger("model_server")

# Reconnect delays while Redis is unreachable: start small so a blip costs little, cap so a long
# outage is noticed within seconds of its end.
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 5.0


class ModelServer:
    """Takes batches of jobs off the queues of the model versions it serves, runs each batch once,
    replies to each job.

    `models` is one loaded model, or the sources of several (see model_server.versions): those are
    loaded by `start`, and followed while serving, so new versions roll in and old ones drain.
    """

    def __init__(self, queue: JobQueue, models: Any, config: Mapping[str, Any], name: str = "",
                 device: str = "", unload: Any = None) -> None:
        self.queue = queue
        self.name = name or config.get("MODEL_SERVER_NAME") or default_server_name()
        self.batch_size = int(config["BATCH_SIZE"])
        self.block_ms = int(config["QUEUE_BLOCK_MS"])
        self.claim_idle_ms = int(config["CLAIM_IDLE_MS"])
        self.result_ttl = float(config["RESULT_TTL"])
        self.stopping = threading.Event()
        self.claimer = Claimer(self.name, self.batch_size, self.block_ms, self.claim_idle_ms)
        fixed = not isinstance(models, (list, tuple))
        sources: Sequence[ModelSource] = [FixedSource(models)] if fixed else models
        self.models = VersionSet(queue, self.name, config, sources, unload=unload or (lambda model: None),
                               poll_seconds=float(config.get("REPOSITORY_POLL_SECONDS", 5.0)),
                               drain_grace=float(config.get("DRAIN_GRACE_SECONDS", 10.0)))
        if fixed:
            self.models.add(models)
        self.heartbeat = HeartbeatPublisher(queue, Heartbeat(
            name=self.name, host=socket.gethostname(), pid=os.getpid(), device=device or "unknown",
            started=time.time(),
        ), float(config["HEARTBEAT_INTERVAL"]), float(config["HEARTBEAT_TTL"]))

    @property
    def batch_sizes(self) -> dict[int, int]:
        """How many batches of each size the models ran."""
        return self.models.figures()[0]

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Load every model version the sources want (for servers built from sources)."""
        if not self.models.versions:
            self.models.start()

    def warm_up(self) -> None:
        """Run each model once per batch shape it will see, so no client pays for tracing."""
        for version in self.models.active():
            limit = self.claimer.limit(version)
            for size in warm_up_sizes(limit):  # per backend: JAX compiles each padded size
                started = time.perf_counter()
                version.model.predict(blank_input(version.contract, size))
                log.info("warm-up %s v%s: batch of %d in %.0f ms", *version.key, size,
                         (time.perf_counter() - started) * 1000)
            started = time.perf_counter()  # once more, now that it is traced, for its true cost
            version.model.predict(blank_input(version.contract, limit))
            elapsed_ms = (time.perf_counter() - started) * 1000
            # A job stays claimed while it waits for the model, runs, and is replied to.
            if elapsed_ms * 4 > self.claim_idle_ms:
                log.warning("a full batch of %s takes %.0f ms, close to CLAIM_IDLE_MS=%d: another server may "
                            "take over batches still running here; raise CLAIM_IDLE_MS",
                            version.key[0], elapsed_ms, self.claim_idle_ms)

    def announce(self) -> None:
        """Publish a heartbeat now, so the web tier sees this server before its first batch."""
        self.heartbeat.beat(**self._figures())

    def stop(self, *_: Any) -> None:
        """Finish and answer what is claimed, then return from `run` (usable as a signal handler)."""
        self.stopping.set()

    def run(self, burst: bool = False) -> None:
        """Serve until `stop` (or, with `burst`, until the queues have nothing more to claim).

        The model runs batch after batch in this thread while two threads do the I/O: a feeder
        claims the next batch while the model runs this one, and a replier publishes a batch's
        answers while the model runs the next. The feeder claims a batch only when the previous
        one has started, so a server holds at most the batches waiting, the batch running and the
        batch being answered. Everything claimed is answered before `run` returns: a stop
        abandons nothing.
        """
        log.info("%s serving %s on %s, batch size %d", self.name,
                 ", ".join(f"{name} v{version}" for name, version in self.models.versions), self.heartbeat.base.device,
                 self.batch_size)
        handover: SimpleQueue[Batch | None] = SimpleQueue()
        free_slot = threading.Semaphore(1)
        failure: list[BaseException] = []
        feeder = threading.Thread(target=self._feed, args=(handover, free_slot, failure, burst), name="feeder",
                                  daemon=True)
        replier = Replier(self.queue, self.result_ttl, done=self._replied)
        feeder.start()
        replier.start()
        try:
            while (item := self._next_handed_over(handover)) is not None:
                free_slot.release()
                version, batch = item
                replier.put(version.runner.run(batch), version)
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
                    self.models.refresh_if_due()
                    if not self._claim_next(handover, free_slot) and burst:
                        return
                    delay = BACKOFF_FIRST
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    log.warning("Redis unreachable (%s); retrying in %.1f s", exc, delay)
                    self.stopping.wait(delay)
                    delay = min(delay * 2, BACKOFF_MAX)
                except redis.ResponseError as exc:
                    if lost_primary(exc):  # a primary demoted by Sentinel under a blocked read
                        log.warning("the Redis primary changed (%s); reconnecting", exc)
                        self.stopping.wait(BACKOFF_FIRST)
                        continue
                    if "NOGROUP" not in str(exc):
                        raise
                    # Redis restarted without persistence: the streams and groups are gone.
                    log.warning("consumer group missing (Redis restarted?); recreating them")
                    for version in self.models.active():
                        version.queue.ensure_group()
        except BaseException as exc:  # surfaces in run(), after what was claimed is processed
            log.exception("the feeder failed")
            failure.append(exc)
        finally:
            handover.put(None)

    def _claim_next(self, handover: SimpleQueue, free_slot: threading.Semaphore) -> bool:
        """Claim batches once the model has taken the previous one; False when nothing came."""
        # Bounded, so the feeder's heartbeats go on while a slow batch runs.
        if not free_slot.acquire(timeout=self.block_ms / 1000):
            return True
        versions = self.models.active()
        if not versions:  # every version still loading: wait as long as a claim would
            free_slot.release()
            self.stopping.wait(self.block_ms / 1000)
            return True
        batches: list[Batch] = []
        try:
            batches = self.claimer.reclaim_if_due(versions) or self.claimer.next_batches(versions)
        finally:
            if not batches:
                free_slot.release()
        for n, (version, batch) in enumerate(batches):
            self.models.started_batch(version)
            if n > 0:  # one slot per batch handed over, so the model has at most one waiting
                free_slot.acquire()
            handover.put((version, batch))
        return bool(batches)

    def _next_handed_over(self, handover: SimpleQueue) -> Batch | None:
        """The feeder's next batch; one that waited for the model is first topped up."""
        try:
            item = handover.get_nowait()
        except Empty:
            # The model was idle and the batch was claimed just now: a top-up would only
            # add a Redis round trip to a lone request's latency.
            return handover.get()
        if item is None:
            return None
        version, batch = item
        return version, self.claimer.top_up(version, batch)

    def _replied(self, version: ServedVersion) -> None:
        self.models.finished_batch(version)

    def _figures(self) -> dict[str, Any]:
        batch_sizes, inference = self.models.figures()
        return {"models": self.models.served(), "batch_sizes": batch_sizes, "inference": inference,
                "redelivered": self.claimer.redelivered}
