"""Running the model on a batch: which jobs run, one model call, one answer per job."""
from __future__ import annotations

import collections
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from keras_rest_api.queue.jobs import Claimed
from keras_rest_api.queue.records import (InferenceFigures, ModelContract, NamedValue, Prediction, Result,
                                          feature_row_problem)

log = logging.getLogger("model_server.inference")


@dataclass
class Outcome:
    """A batch after the model ran: each job's answer, and entries acknowledged without one."""

    batch_id: str
    answers: list[tuple[Claimed, Result]]
    dropped: list[bytes]
    # Every answer and entry of a batch belongs to one model version's queue.
    queue: Any = None


class BatchRunner:
    """Classifies the live jobs of a batch in one model call and keeps the figures for /metrics.

    A failed model call fails every job of its batch, each with its own error answer naming
    the batch, and the next batch runs as usual.
    """

    def __init__(self, model: Any, contract: ModelContract, server_name: str, max_deliveries: int) -> None:
        self.model = model
        self.contract = contract
        self.server_name = server_name
        self.max_deliveries = max_deliveries
        self._batch_numbers = itertools.count(1)
        # How many batches of each size ran, and how long the model took: published with heartbeats.
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self.inference = InferenceFigures()

    def run(self, batch: Sequence[Claimed]) -> Outcome:
        """The answers for `batch`, and the entries to acknowledge without an answer."""
        batch_id = f"{self.server_name}#{next(self._batch_numbers)}"
        runnable, answers, dropped = self._triage(batch, batch_id)
        if runnable:
            answers.extend(self._classify(runnable, batch_id))
        return Outcome(batch_id, answers, dropped, batch[0].queue if batch else None)

    def _triage(self, batch: Sequence[Claimed], batch_id: str) -> tuple[list[Claimed], list, list[bytes]]:
        """Split a batch into jobs to run, jobs answered without running, and entries to drop."""
        now = time.time()
        expected = (*self.contract.input_size, 3)
        runnable: list[Claimed] = []
        answers: list[tuple[Claimed, Result]] = []
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
                    answers.append((claimed, Result.failure(
                        "The job expired in the queue before a model server could take it. Submit it again.", 504)))
                else:
                    dropped.append(claimed.entry_id)
            elif claimed.deliveries > self.max_deliveries:
                log.error("batch %s: job %s delivered %d times; giving up on it", batch_id, job.id, claimed.deliveries)
                answers.append((claimed, Result.failure(
                    f"This image was attempted {claimed.deliveries} times and each attempt ended its model "
                    "server; it is not processed again. Check the image, or report it with its request id.",
                    422)))
            elif self.contract.takes_features or job.features is not None:
                problem = self._features_problem(job)
                if problem:
                    answers.append((claimed, problem))
                else:
                    runnable.append(claimed)
            elif job.pixels.shape != expected:
                answers.append((claimed, Result.failure(
                    f"The image was prepared as {job.pixels.shape} but the model now expects {expected} "
                    "(the model changed). Retry the request.", 503)))
            else:
                runnable.append(claimed)
        return runnable, answers, dropped

    def _features_problem(self, job: Any) -> Result | None:
        """The answer for a job that does not fit this features model (the web tier checked it
        against the contract it saw; a record may be forged, or the model changed): None if it fits."""
        if not self.contract.takes_features or job.features is None:
            return Result.failure(f"The request was prepared for another kind of model than {self.contract.name} "
                                  f"version {self.contract.version} takes (the model changed). Retry the request.", 503)
        problem = feature_row_problem(self.contract, job.features)
        if problem:
            log.warning("job %s: feature row refused: %s", job.id, problem)
            return Result.failure(f"The instance does not fit model {self.contract.name} version "
                                  f"{self.contract.version}: {problem}. Fix the instance and retry.", 400)
        return None

    def _inputs(self, runnable: Sequence[Claimed]) -> np.ndarray:
        if self.contract.takes_features:
            return np.stack([claimed.job.features for claimed in runnable])
        return np.stack([claimed.job.pixels for claimed in runnable])

    def _classify(self, runnable: Sequence[Claimed], batch_id: str) -> list[tuple[Claimed, Result]]:
        started_wall, started = time.time(), time.perf_counter()
        try:
            probabilities = self.model.predict(self._inputs(runnable))
        except Exception:
            log.exception("batch %s: the model failed on %d images", batch_id, len(runnable))
            # The exception's text stays in the log: it may describe the server's internals.
            message = (f"The model failed on this image's batch (batch id {batch_id}). "
                       "Retry; if it persists, report the batch id to the operator.")
            return [(claimed, Result.failure(message, 500)) for claimed in runnable]
        inference_ms = (time.perf_counter() - started) * 1000
        self.batch_sizes[len(runnable)] += 1
        self.inference.observe(inference_ms / 1000)
        log.debug("batch %s: %d images in %.1f ms", batch_id, len(runnable), inference_ms)
        answers = []
        for claimed, row in zip(runnable, probabilities):
            job = claimed.job
            timing = {"queue": max(0.0, (started_wall - job.enqueued_at) * 1000), "inference": inference_ms,
                      "batch": float(len(runnable))}
            answers.append((claimed, self._answer(row, job, timing)))
        return answers

    def _answer(self, row: np.ndarray, job: Any, timing: dict[str, float]) -> Result:
        """One job's result from its output row, as the contract's output kind says."""
        kind = self.contract.output_kind
        if not np.all(np.isfinite(row)):
            return Result.failure(f"The model answered a value that is not finite for this input (model "
                                  f"{self.contract.name} version {self.contract.version}).", 500)
        if kind == "regression":
            values = [NamedValue(o.name, float(v), o.unit) for o, v in zip(self.contract.outputs, row)]
            return Result.ok([], timing, probabilities=row if job.full_output else None, values=values,
                             model=self.contract.name, version=self.contract.version)
        if kind == "probability":
            predictions = [Prediction(self.contract.positive_label, float(row[0]), 0 if job.full_output else None)]
        else:
            predictions = top_predictions(row, self.model.labels, job.top_k, with_index=job.full_output)
        return Result.ok(predictions, timing, probabilities=row if job.full_output else None,
                         model=self.contract.name, version=self.contract.version)


def blank_input(contract: ModelContract, size: int) -> np.ndarray:
    """A batch of `size` zero inputs of the shape `contract`'s model takes: for warming it up."""
    if contract.takes_features:
        return np.zeros((size, len(contract.features)), dtype=np.float64)
    return np.zeros((size, *contract.input_size, 3), dtype=np.uint8)


def top_predictions(probabilities: np.ndarray, labels: Sequence[str], k: int,
                    with_index: bool = False) -> list[Prediction]:
    """The `k` most probable classes, highest first (with their class indices if asked)."""
    k = min(k, len(probabilities))
    top = np.argpartition(-probabilities, k - 1)[:k]
    top = top[np.argsort(-probabilities[top], kind="stable")]
    return [Prediction(labels[i], float(probabilities[i]), int(i) if with_index else None) for i in top]
