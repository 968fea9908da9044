"""Replying: a thread publishes each batch's answers while the model runs the next batch."""
from __future__ import annotations

import logging
import threading
from queue import Queue
from typing import Any, Callable

import redis

from keras_rest_api.queue.jobs import JobQueue
from keras_rest_api.model_server.inference import Outcome

log = logging.getLogger("model_server.replies")


class Replier:
    """Publishes outcomes in order from its own thread; `close` returns once all are published.

    Its outbox holds one batch: if Redis is slow to take answers, the model stops rather than
    run ahead with claimed jobs that another server would soon take over.
    """

    def __init__(self, queue: JobQueue, result_ttl: float, done: Callable[[Any], None] | None = None) -> None:
        self.queue = queue
        self.result_ttl = result_ttl
        # Called with each outcome's tag once it is published (or given up on).
        self.done = done or (lambda tag: None)
        self._outbox: Queue[tuple[Outcome, Any] | None] = Queue(maxsize=1)
        self._thread = threading.Thread(target=self._run, name="replier", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, outcome: Outcome, tag: Any = None) -> None:
        """Hand over a batch's outcome; blocks while the previous one is still being published."""
        self._outbox.put((outcome, tag))

    def close(self) -> None:
        """Publish what was handed over, then end the thread."""
        self._outbox.put(None)
        self._thread.join()

    def send(self, outcome: Outcome) -> None:
        """Publish a batch's answers and acknowledge its entries."""
        queue = outcome.queue or self.queue
        try:
            queue.reply(outcome.answers, self.result_ttl)
            queue.discard(outcome.dropped)
        except redis.RedisError as exc:
            # Its jobs stay claimed in Redis; a server takes them over after CLAIM_IDLE_MS.
            log.warning("batch %s: could not reply to %d jobs (%s); they will be taken over",
                        outcome.batch_id, len(outcome.answers) + len(outcome.dropped), exc)
            return
        log.debug("batch %s: %d answered, %d dropped", outcome.batch_id, len(outcome.answers), len(outcome.dropped))

    def _run(self) -> None:
        while (item := self._outbox.get()) is not None:
            outcome, tag = item
            try:
                self.send(outcome)
            except Exception:  # the replier must outlive one bad batch, or the model loop would block on the outbox
                log.exception("batch %s: replying failed; its jobs will be taken over", outcome.batch_id)
            finally:
                self.done(tag)
