"""The web tier's one data plane: decode images to a model's contract, queue one job per image,
wait for every answer until one deadline.

`/predict` (web.predict) and the Open Inference Protocol (web.v2) only translate HTTP into
calls here and answers back into HTTP; both reach the model servers through the same queue,
the same bounds and the same errors (keras_rest_api.errors).
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import redis

from keras_rest_api.errors import GatewayTimeout, ServiceError, ServiceUnavailable
from keras_rest_api.ids import new_request_id
from keras_rest_api.imaging.budget import DecodeBudget
from keras_rest_api.imaging.decode import decode_image
from keras_rest_api.queue.jobs import JobQueue, NotReplicated, QueueFull, lost_primary
from keras_rest_api.queue.records import NO_PIXELS, Job, ModelContract, Result
from keras_rest_api.web.served import ServedModels

log = logging.getLogger("web.dataplane")

# Memory json.loads may build per byte of JSON: ~33 for a body of empty objects or lists (Python
# objects, list slots, over-allocation), measured by tests/unit/web/test_parse_budget.py.
JSON_BYTES_PER_BYTE = 40
# Copies of the non-JSON part of a body while it is parsed: a multipart part's buffer and the
# bytes read from it; a binary tensor's slice, its elements, and FP32 pixels widened to float64.
COPIES_PER_BINARY_BYTE = 3
# Backoff between attempts to queue a job again while no primary answers (a failover under way).
RESUBMIT_FIRST_DELAY, RESUBMIT_MAX_DELAY = 0.1, 1.0


class DataPlane:
    """What every inference route does, with its dependencies passed in."""

    def __init__(self, queue: JobQueue, served: ServedModels, budget: DecodeBudget,
                 settings: Mapping[str, Any]) -> None:
        self.queue = queue
        self.served = served
        self.budget = budget
        self.max_queue_length = int(settings["MAX_QUEUE_LENGTH"])
        self.max_image_pixels = int(settings["MAX_IMAGE_PIXELS"])
        self.request_timeout = float(settings["REQUEST_TIMEOUT"])
        self.max_upload_bytes = int(settings["MAX_UPLOAD_BYTES"])
        self.max_json_bytes = int(settings["MAX_JSON_BYTES"])
        self.min_replicas = int(settings["MIN_REPLICAS"])
        self.min_replicas_timeout_ms = int(settings["MIN_REPLICAS_TIMEOUT_MS"])
        self.retry_after = int(settings["RETRY_AFTER_SECONDS"])

    @contextmanager
    def parsing(self, nbytes: int, advice: str) -> Iterator[None]:
        """Hold `nbytes` of the process's decode budget while a request body is read, parsed and
        validated (see `parse_cost`): 413 when that alone exceeds the budget, 503 when it finds no
        room in time. Released before the images are decoded, which reserve their own cost."""
        with self.budget.reserve(nbytes, "Reading and parsing this request", advice):
            yield

    def parse_cost(self, body_bytes: int | None, json_bytes: int = 0) -> int:
        """What reading and parsing a body of `body_bytes` (None: not declared, so the largest
        allowed), `json_bytes` of it JSON, may hold at most: the body, JSON's objects, and the
        copies multipart and binary tensor data make of the rest."""
        body = self.max_upload_bytes if body_bytes is None else max(0, body_bytes)
        json_part = min(max(0, json_bytes), body)
        return body + (body - json_part) * COPIES_PER_BINARY_BYTE + json_part * JSON_BYTES_PER_BYTE

    def resolve(self, name: str | None, version: str | None) -> ModelContract:
        """The version a request for `name` (None: the default model) and `version` (None: the
        newest ready one) goes to; ModelNotFound (404) or NoModelServer (503)."""
        return self.served.resolve(name, version)

    def queue_for(self, contract: ModelContract) -> JobQueue:
        return self.queue.for_model(contract.name, contract.version)

    def check_room(self, contract: ModelContract, images: int = 1) -> None:
        """503 before any decoding when `contract`'s queue cannot take `images` more now.

        Each job is still queued with the atomic bounded submit; this spares the decoding (and
        the partial queueing of a batch) that would be refused anyway.
        """
        queue = self.queue_for(contract)
        room = queue.admits(self.max_queue_length) if images == 1 else \
            queue.length() + images <= self.max_queue_length
        if not room:
            raise self._queue_full(images)

    def decode(self, data: bytes, contract: ModelContract) -> np.ndarray:
        """The upload as the model's uint8 RGB pixels, under this process's decode budget."""
        return decode_image(data, contract, self.max_image_pixels, budget=self.budget)

    def enqueue(self, contract: ModelContract, images: Sequence[np.ndarray], top_k: int, timeout: float,
                request_id: str, *, full_output: bool = False, fetch_later: bool = False,
                pending_ttl: float = 0, owner: str = "") -> list[Job]:
        """Queue each image as a job of its own on `contract`'s queue, all with one deadline.

        Each is batched by the model servers with everyone else's. ServiceUnavailable (503) when
        the queue is full; jobs queued before that are answered and expire unread. A job that
        may be fetched later is promised (202) to its client, so with MIN_REPLICAS it counts as
        queued only once that many replicas hold it; else 503.
        """
        deadline = time.time() + timeout
        jobs = [Job(id=new_request_id(), pixels=pixels, top_k=top_k, deadline=deadline, request_id=request_id,
                    full_output=full_output, fetch_later=fetch_later) for pixels in images]
        return self._submit(contract, jobs, pending_ttl, owner, fetch_later, request_id)

    def enqueue_rows(self, contract: ModelContract, rows: Sequence[np.ndarray], top_k: int, timeout: float,
                     request_id: str, *, full_output: bool = False, fetch_later: bool = False,
                     pending_ttl: float = 0, owner: str = "") -> list[Job]:
        """Queue each feature row (a features model's checked instance) as a job of its own, as `enqueue`."""
        deadline = time.time() + timeout
        jobs = [Job(id=new_request_id(), pixels=NO_PIXELS, features=row, top_k=top_k, deadline=deadline,
                    request_id=request_id, full_output=full_output, fetch_later=fetch_later) for row in rows]
        return self._submit(contract, jobs, pending_ttl, owner, fetch_later, request_id)

    def _submit(self, contract: ModelContract, jobs: list[Job], pending_ttl: float, owner: str, fetch_later: bool,
                request_id: str) -> list[Job]:
        queue = self.queue_for(contract)
        replicas = self.min_replicas if fetch_later else 0
        for job in jobs:
            try:
                queue.submit(job, self.max_queue_length, pending_ttl=pending_ttl, owner=owner,
                             min_replicas=replicas, replicas_timeout_ms=self.min_replicas_timeout_ms)
            except QueueFull:
                raise self._queue_full(len(jobs)) from None
            except NotReplicated as exc:
                log.warning("request %s (job %s): %s within %d ms; not accepted", request_id, job.id, exc,
                            self.min_replicas_timeout_ms)
                raise ServiceUnavailable(
                    f"The job could not be stored safely: {exc.acknowledged} of the {exc.wanted} Redis replicas "
                    f"required (MIN_REPLICAS) confirmed it within {self.min_replicas_timeout_ms} ms. It was not "
                    "accepted; retry shortly.", retry_after=self.retry_after) from None
        return jobs

    def wait(self, contract: ModelContract, jobs: Sequence[Job], timeout: float) -> list[Result | None]:
        """Every job's answer, waiting until one deadline `timeout` s from now; None for a late one.

        When the primary goes away or changes under the wait (a Redis crash, a Sentinel
        failover), the job may have gone with it: this process still holds its pixels, so it
        queues the job again under the same id on whichever primary answers next, and waits on.
        A job that then runs twice has two answers pushed; only the first is taken.
        """
        queue = self.queue_for(contract)
        deadline = time.time() + timeout
        return [self._wait_one(queue, job, deadline) for job in jobs]

    def _wait_one(self, queue: JobQueue, job: Job, deadline: float) -> Result | None:
        while True:
            try:
                return queue.wait_result(job.id, timeout=deadline - time.time())
            except redis.RedisError as exc:
                if not lost_primary(exc) or time.time() >= deadline:
                    raise
                log.warning("request %s (job %s): lost the Redis primary while waiting (%s); queueing the "
                            "job again", job.request_id, job.id, exc)
                self._resubmit(queue, job, deadline)

    def _resubmit(self, queue: JobQueue, job: Job, deadline: float) -> None:
        """Queue `job` again (same id) as soon as a primary takes it, retrying with backoff until
        `deadline`; the last error when none did. The bound is this request's own deadline."""
        delay = RESUBMIT_FIRST_DELAY
        while True:
            try:
                queue.submit(job, self.max_queue_length)
                return
            except QueueFull:
                raise self._queue_full(1) from None
            except redis.RedisError as exc:
                if not lost_primary(exc) or time.time() + delay >= deadline:
                    raise
            # Backing off between reconnections while no primary answers (not polling for data).
            time.sleep(delay)
            delay = min(delay * 2, RESUBMIT_MAX_DELAY)

    def classify(self, contract: ModelContract, images: Sequence[np.ndarray], top_k: int, timeout: float,
                 request_id: str, *, full_output: bool = False) -> list[Result]:
        """Queue the images and return their successful answers, in order; the first failure raises
        (GatewayTimeout when one is late, or the model server's error)."""
        jobs = self.enqueue(contract, images, top_k, timeout, request_id, full_output=full_output)
        return self.answers(contract, jobs, timeout, request_id, "Image")

    def predict_rows(self, contract: ModelContract, rows: Sequence[np.ndarray], top_k: int, timeout: float,
                     request_id: str, *, full_output: bool = False) -> list[Result]:
        """Queue a features model's rows and return their successful answers, in order, as `classify`."""
        jobs = self.enqueue_rows(contract, rows, top_k, timeout, request_id, full_output=full_output)
        return self.answers(contract, jobs, timeout, request_id, "Instance")

    def answers(self, contract: ModelContract, jobs: Sequence[Job], timeout: float, request_id: str,
                what: str) -> list[Result]:
        """Every job's successful answer; GatewayTimeout when one is late, else the first failure's error."""
        answers = self.wait(contract, jobs, timeout)
        for index, answer in enumerate(answers):
            if answer is None:
                log.warning("request %s: %s %d of %d: no answer within %.1f s", request_id, what.lower(), index,
                            len(answers), timeout)
                raise GatewayTimeout(no_answer_message(timeout))
            check_answer(answer, request_id, f"{what} {index}: " if len(answers) > 1 else "")
        return answers  # type: ignore[return-value]

    def _queue_full(self, images: int) -> ServiceUnavailable:
        extra = f"; this request has {images}" if images > 1 else ""
        return ServiceUnavailable(f"The queue is full ({self.max_queue_length} jobs waiting or in flight{extra}). "
                                  "Retry shortly.")


def check_answer(answer: Result, request_id: str, prefix: str = "") -> Result:
    """`answer` if it succeeded, else the error it carries, for the client.

    A model server's 500 may name hosts, batches or exceptions: that text stays in the log.
    """
    if answer.success:
        return answer
    log.error("request %s: model server answered %d: %s", request_id, answer.status, answer.error)
    if answer.status == 500:
        raise ServiceError(f"{prefix}The model failed on this image (request id {request_id}); the log has the "
                           "details. Retry; if it persists, contact the operator.")
    if answer.status == 503:
        raise ServiceUnavailable(f"{prefix}{answer.error}")
    raise ServiceError(f"{prefix}{answer.error}", status=answer.status)


def no_answer_message(timeout: float) -> str:
    """The 504 message."""
    return (f"No answer from the model within {timeout:g} s. "
            "The service is overloaded or no model server is running; retry later.")
