"""Claiming work for one model server: batches of new jobs, and jobs abandoned by dead servers."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Sequence

import redis

from keras_rest_api.queue.jobs import Claimed, claim_any

if TYPE_CHECKING:
    from keras_rest_api.model_server.versions import ServedVersion

log = logging.getLogger("model_server.claims")

Batch = tuple["ServedVersion", list[Claimed]]


class Claimer:
    """Claims batches for the consumer `name` from the queues of the model versions it serves.

    A batch holds jobs of one version. It is complete when it holds that version's batch size
    (its contract's, capped by the server's `batch_size`) or when its wait window has passed
    since its first job arrived, whichever comes first. Jobs another server claimed and left idle
    for `claim_idle_ms` (it died) are taken over, at most every half of that interval.
    """

    def __init__(self, name: str, batch_size: int, block_ms: int, claim_idle_ms: int) -> None:
        self.name = name
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.redelivered = 0
        self._next_reclaim = 0.0

    def limit(self, version: "ServedVersion") -> int:
        """The most jobs one batch of `version` may hold.

        The server's BATCH_SIZE caps image batches (their memory); a features model's rows are
        small, so its own declared batch size alone bounds them.
        """
        if version.contract.takes_features:
            return max(1, version.contract.max_batch_size)
        return max(1, min(self.batch_size, version.contract.max_batch_size))

    def next_batches(self, versions: Sequence["ServedVersion"]) -> list[Batch]:
        """Block (up to `block_ms`) for the first job of any version, then fill each version's batch."""
        if not versions:
            return []
        if len(versions) == 1:  # one queue: claim a whole batch in the blocking call itself
            version = versions[0]
            batch = version.queue.claim(self.name, self.limit(version), block_ms=self.block_ms)
            if batch and version.contract.max_wait_ms > 0:
                batch = self.fill(version, batch)
            return [(version, batch)] if batch else []
        by_queue = {id(v.queue): v for v in versions}
        seeds = claim_any([v.queue for v in versions], self.name, self.block_ms)
        return [(by_queue[id(c.queue)], self.fill(by_queue[id(c.queue)], [c])) for c in seeds]

    def fill(self, version: "ServedVersion", batch: list[Claimed]) -> list[Claimed]:
        """Gather more jobs of `version` until the batch is full or its window ends."""
        limit, wait_ms = self.limit(version), version.contract.max_wait_ms
        window_ends = time.monotonic() + wait_ms / 1000
        while len(batch) < limit:
            remaining_ms = int((window_ends - time.monotonic()) * 1000)
            # XREADGROUP's BLOCK 0 means forever, so a spent window reads without blocking.
            more = version.queue.claim(self.name, limit - len(batch), block_ms=remaining_ms if remaining_ms >= 1 else None)
            if not more:
                break
            batch.extend(more)
        return batch

    def top_up(self, version: "ServedVersion", batch: list[Claimed]) -> list[Claimed]:
        """Fill a batch that waited for the model with the jobs that arrived meanwhile."""
        limit = self.limit(version)
        if len(batch) < limit:
            try:
                batch.extend(version.queue.claim(self.name, limit - len(batch), block_ms=None))
            except redis.RedisError as exc:  # the batch in hand still runs
                log.warning("could not top up a batch of %d: %s", len(batch), exc)
        return batch

    def reclaim_if_due(self, versions: Sequence["ServedVersion"]) -> list[Batch]:
        """Jobs abandoned by a server that stopped answering, when a takeover is due; else []."""
        now = time.monotonic()
        if now < self._next_reclaim:
            return []
        self._next_reclaim = now + min(self.claim_idle_ms / 2000, 5.0)
        batches = []
        for version in versions:
            taken = version.queue.reclaim(self.name, self.claim_idle_ms, self.limit(version))
            if taken:
                self.redelivered += len(taken)
                log.warning("%s took over %d abandoned jobs of %s version %s", self.name, len(taken), *version.key)
                batches.append((version, taken))
        return batches
