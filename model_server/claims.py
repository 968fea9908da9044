"""Claiming work for one model server: batches of new jobs, and jobs abandoned by dead servers."""
from __future__ import annotations

import logging
import time

import redis

from jobqueue import Claimed, JobQueue

log = logging.getLogger("model_server.claims")


class Claimer:
    """Claims batches off a `JobQueue` for the consumer `name`.

    A batch is complete when it holds `batch_size` jobs or when `batch_wait_ms` has passed since
    its first job arrived, whichever comes first. Jobs another server claimed and left idle for
    `claim_idle_ms` (it died) are taken over, at most every half of that interval.
    """

    def __init__(self, queue: JobQueue, name: str, batch_size: int, batch_wait_ms: int, block_ms: int,
                 claim_idle_ms: int) -> None:
        self.queue = queue
        self.name = name
        self.batch_size = batch_size
        self.batch_wait_ms = batch_wait_ms
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.redelivered = 0
        self._next_reclaim = 0.0

    def next_batch(self) -> list[Claimed]:
        """Block (up to `block_ms`) for the first job, then gather more until full or the window ends."""
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

    def top_up(self, batch: list[Claimed]) -> list[Claimed]:
        """Fill a batch that waited for the model with the jobs that arrived meanwhile."""
        if len(batch) < self.batch_size:
            try:
                batch.extend(self.queue.claim(self.name, self.batch_size - len(batch), block_ms=None))
            except redis.RedisError as exc:  # the batch in hand still runs
                log.warning("could not top up a batch of %d: %s", len(batch), exc)
        return batch

    def reclaim_if_due(self) -> list[Claimed]:
        """Jobs abandoned by a server that stopped answering, when a takeover is due; else []."""
        now = time.monotonic()
        if now < self._next_reclaim:
            return []
        self._next_reclaim = now + min(self.claim_idle_ms / 2000, 5.0)
        taken = self.queue.reclaim(self.name, self.claim_idle_ms, self.batch_size)
        if taken:
            self.redelivered += len(taken)
            log.warning("%s took over %d abandoned jobs", self.name, len(taken))
        return taken
