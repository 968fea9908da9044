"""The web tier's one data plane: decode images to a model's contract, queue one job per image,
wait for every answer until one deadline.

`/predict` (web.predict) and the Open Inference Protocol (web.v2) only translate HTTP into
calls here and answers back into HTTP; both reach the model servers through the same queue,
the same bounds and the same errors (keras_rest_api.errors).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Mapping, Sequence

import numpy as np

from keras_rest_api.errors import GatewayTimeout, ServiceError, ServiceUnavailable
from keras_rest_api.ids import new_request_id
from keras_rest_api.imaging.budget import DecodeBudget
from keras_rest_api.imaging.decode import decode_image
from keras_rest_api.queue.jobs import JobQueue, QueueFull
from keras_rest_api.queue.records import NO_PIXELS, Job, ModelContract, Result
from keras_rest_api.web.served import ServedModels

log = logging.getLogger("web.dataplane")


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
                pending_ttl: float = 0) -> list[Job]:
        """Queue each image as a job of its own on `contract`'s queue, all with one deadline.

        Each is batched by the model servers with everyone else's. ServiceUnavailable (503) when
        the queue is full; jobs queued before that are answered and expire unread.
        """
        deadline = time.time() + timeout
        jobs = [Job(id=new_request_id(), pixels=pixels, top_k=top_k, deadline=deadline, request_id=request_id,
                    full_output=full_output, fetch_later=fetch_later) for pixels in images]
        return self._submit(contract, jobs, pending_ttl)

    def enqueue_rows(self, contract: ModelContract, rows: Sequence[np.ndarray], top_k: int, timeout: float,
                     request_id: str, *, full_output: bool = False, fetch_later: bool = False,
                     pending_ttl: float = 0) -> list[Job]:
        """Queue each feature row (a features model's checked instance) as a job of its own, as `enqueue`."""
        deadline = time.time() + timeout
        jobs = [Job(id=new_request_id(), pixels=NO_PIXELS, features=row, top_k=top_k, deadline=deadline,
                    request_id=request_id, full_output=full_output, fetch_later=fetch_later) for row in rows]
        return self._submit(contract, jobs, pending_ttl)

    def _submit(self, contract: ModelContract, jobs: list[Job], pending_ttl: float) -> list[Job]:
        queue = self.queue_for(contract)
        for job in jobs:
            try:
                queue.submit(job, self.max_queue_length, pending_ttl=pending_ttl)
            except QueueFull:
                raise self._queue_full(len(jobs)) from None
        return jobs

    def wait(self, contract: ModelContract, jobs: Sequence[Job], timeout: float) -> list[Result | None]:
        """Every job's answer, waiting until one deadline `timeout` s from now; None for a late one."""
        queue = self.queue_for(contract)
        deadline = time.time() + timeout
        return [queue.wait_result(job.id, timeout=deadline - time.time()) for job in jobs]

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
