"""Heartbeats: a model server says it is alive, what it serves, and its cumulative figures."""
from __future__ import annotations

import dataclasses
import logging
import time

import redis

from keras_rest_api.queue.jobs import JobQueue
from keras_rest_api.queue.records import Heartbeat

log = logging.getLogger("model_server.heartbeat")


class HeartbeatPublisher:
    """Publishes `base` (with fresh figures) every `interval` seconds, each valid for `ttl` seconds."""

    def __init__(self, queue: JobQueue, base: Heartbeat, interval: float, ttl: float) -> None:
        self.queue = queue
        self.base = base
        self.interval = interval
        self.ttl = ttl
        self._next = 0.0

    def beat_if_due(self, **figures: object) -> None:
        """Publish now if the last heartbeat is `interval` old; `figures` update the published fields."""
        now = time.monotonic()
        if now >= self._next:
            self.beat(**figures)
            self._next = now + self.interval

    def beat(self, **figures: object) -> None:
        self.queue.heartbeat(dataclasses.replace(self.base, **figures), self.ttl)

    def leave(self) -> None:
        """Withdraw the heartbeat: this server takes no more work."""
        try:
            self.queue.remove_server(self.base.name)
        except redis.RedisError as exc:
            log.warning("could not remove heartbeat on exit: %s", exc)
