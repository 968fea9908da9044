"""The model versions one server serves, and their rollout: load new ones, drain and unload old ones.

A version is `loading` (not yet answering), `ready` (takes new traffic) or `draining` (answers
what is queued for it, takes no new default traffic). A version the policy no longer wants is
drained only once a wanted version of the same model is ready here, so a model is never left
without a ready version by a rollout, and a bad new version never takes traffic from a good old one.
It is unloaded once the web tiers have had time to see it draining (`drain_grace`), its queue is
empty and no batch of it is in flight.
"""
from __future__ import annotations

import collections
import gc
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

from keras_rest_api.queue.jobs import JobQueue
from keras_rest_api.model_server.inference import BatchRunner, blank_input
from keras_rest_api.queue.records import InferenceFigures, ModelContract, ServedModel

log = logging.getLogger("model_server.versions")


class ModelSource(Protocol):
    """Where the versions of one model come from (a model repository, or one model loaded at start)."""

    name: str

    def wanted_versions(self) -> list[str]:
        """The versions that should be served now (the model's version policy), ascending."""

    def load(self, version: str) -> Any:
        """Load `version`: a LoadedModel."""


class NoModelLoaded(RuntimeError):
    """Start-up found no model version it could serve."""


class RepositorySource:
    """The versions of model `name` in a model repository, as its version policy selects them."""

    def __init__(self, repository: Any, name: str) -> None:
        self.repository = repository
        self.name = name

    def wanted_versions(self) -> list[str]:
        return list(self.repository.versions_to_serve(self.name))

    def load(self, version: str) -> Any:
        return self.repository.load(self.name, version)


class FixedSource:
    """One model, already loaded, served as its only version (the single-model `MODEL` setting and tests)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.name = model.name
        self.version = str(getattr(model, "version", "1"))

    def wanted_versions(self) -> list[str]:
        return [self.version]

    def load(self, version: str) -> Any:
        return self.model


@dataclass
class ServedVersion:
    """One loaded version: its model, contract, queue, batch runner and state."""

    model: Any
    contract: ModelContract
    queue: JobQueue
    runner: BatchRunner
    state: str = "ready"
    draining_since: float = 0.0
    in_flight: int = 0  # batches claimed and not yet replied to

    @property
    def key(self) -> tuple[str, str]:
        return self.contract.name, self.contract.version


@dataclass
class VersionSet:
    """The versions this server serves, kept in step with their sources."""

    queue: JobQueue
    server_name: str
    config: Mapping[str, Any]
    sources: Sequence[ModelSource]
    unload: Callable[[Any], None] = lambda model: None
    poll_seconds: float = 5.0
    drain_grace: float = 10.0
    versions: dict[tuple[str, str], ServedVersion] = field(default_factory=dict)
    _failed: set[tuple[str, str]] = field(default_factory=set)
    # Figures of versions already unloaded: a server's published counters must never go back.
    retired_batch_sizes: collections.Counter = field(default_factory=collections.Counter)
    retired_inference: InferenceFigures = field(default_factory=InferenceFigures)
    _loading: set[tuple[str, str]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _next_refresh: float = 0.0

    def start(self) -> None:
        """Load every wanted version now, in this thread (start-up: the server is not serving yet)."""
        for source in self.sources:
            for version in source.wanted_versions():
                self._load(source, version)
        if not self.versions:
            raise NoModelLoaded("no model version could be loaded; the errors above say why for each")

    def add(self, model: Any) -> ServedVersion:
        """Serve an already loaded model."""
        contract = contract_of(model, self.config)
        served = ServedVersion(model, contract, self.queue.for_model(contract.name, contract.version),
                               BatchRunner(model, contract, self.server_name, int(self.config["MAX_DELIVERIES"])))
        served.queue.ensure_group()
        with self._lock:
            self.versions[served.key] = served
        return served

    def active(self) -> list[ServedVersion]:
        """The versions whose queues this server claims from (ready and draining)."""
        with self._lock:
            return [v for v in self.versions.values() if v.state in ("ready", "draining")]

    def served(self) -> list[ServedModel]:
        """What the heartbeat says this server serves."""
        with self._lock:
            listed = [ServedModel(v.contract, v.state) for v in self.versions.values()]
        return listed

    def figures(self) -> tuple[dict[int, int], InferenceFigures]:
        """Batches run by size, and model-call durations, over every version this server has served."""
        with self._lock:
            sizes = collections.Counter(self.retired_batch_sizes)
            inference = InferenceFigures()
            inference.add(self.retired_inference)
            for version in self.versions.values():
                sizes.update(version.runner.batch_sizes)
                inference.add(version.runner.inference)
        return dict(sizes), inference

    def started_batch(self, version: ServedVersion) -> None:
        with self._lock:
            version.in_flight += 1

    def finished_batch(self, version: ServedVersion) -> None:
        with self._lock:
            version.in_flight -= 1

    def refresh_if_due(self) -> None:
        """Follow the sources: load new versions (in the background), drain and unload old ones."""
        now = time.monotonic()
        if now < self._next_refresh:
            return
        self._next_refresh = now + self.poll_seconds
        for source in self.sources:
            try:
                wanted = source.wanted_versions()
            except Exception as exc:  # a broken repository entry must not stop the versions already served
                log.error("model %s: cannot read its versions (%s); serving what is loaded", source.name, exc)
                continue
            self._start_loading(source, wanted)
            self._drain_unwanted(source.name, wanted)
        self._unload_drained()

    # --- rollout steps ------------------------------------------------------------------
    def _start_loading(self, source: ModelSource, wanted: Sequence[str]) -> None:
        for version in wanted:
            key = (source.name, version)
            with self._lock:
                if key in self.versions or key in self._loading or key in self._failed:
                    continue
                self._loading.add(key)
            log.info("model %s: loading version %s", source.name, version)
            threading.Thread(target=self._load, args=(source, version), name=f"load-{source.name}-{version}",
                             daemon=True).start()

    def _load(self, source: ModelSource, version: str) -> None:
        key = (source.name, version)
        started = time.perf_counter()
        try:
            served = self.add(source.load(version))
            _warm_up(served)
        except Exception as exc:
            # Logged once; the versions already served go on. A fixed folder needs a restart.
            log.error("model %s version %s cannot be served: %s", source.name, version, exc)
            with self._lock:
                self._failed.add(key)
                self.versions.pop(key, None)
        else:
            log.info("model %s version %s ready in %.1f s", source.name, version, time.perf_counter() - started)
        finally:
            with self._lock:
                self._loading.discard(key)

    def _drain_unwanted(self, name: str, wanted: Sequence[str]) -> None:
        with self._lock:
            mine = [v for v in self.versions.values() if v.contract.name == name]
            replacement_ready = any(v.state == "ready" and v.contract.version in wanted for v in mine)
            for version in mine:
                if version.contract.version in wanted or version.state != "ready":
                    continue
                if replacement_ready or not wanted:
                    log.info("model %s: draining version %s", name, version.contract.version)
                    version.state, version.draining_since = "draining", time.monotonic()

    def _unload_drained(self) -> None:
        now = time.monotonic()
        with self._lock:
            candidates = [v for v in self.versions.values()
                          if v.state == "draining" and v.in_flight == 0 and now - v.draining_since >= self.drain_grace]
        for version in candidates:
            if version.queue.length() > 0:
                continue  # still queued for it: answer those first
            with self._lock:
                if version.in_flight:
                    continue
                del self.versions[version.key]
                self.retired_batch_sizes.update(version.runner.batch_sizes)
                self.retired_inference.add(version.runner.inference)
            log.info("model %s: version %s drained and unloaded", *version.key)
            self.unload(version.model)
            gc.collect()


def _warm_up(version: ServedVersion) -> None:
    """Run a new version once before it takes traffic, so no client pays for tracing."""
    version.model.predict(blank_input(version.contract, 1))


_NORMALIZATION_OF_PREPROCESSING = {"raw": "raw", "unit": "unit", "tf": "tf", "torch": "torch", "caffe": "caffe"}


def contract_of(model: Any, config: Mapping[str, Any]) -> ModelContract:
    """The model's declared contract; for a model that declares none, one from what it has."""
    contract = getattr(model, "contract", None)
    if contract is not None:
        return contract
    height, width = model.input_size
    return ModelContract(
        name=model.name, version=str(getattr(model, "version", "1")), input_height=height, input_width=width,
        classes=len(model.labels), resize="squash", interpolation="bilinear",
        normalization=_NORMALIZATION_OF_PREPROCESSING.get(getattr(model, "preprocessing", ""), "raw"),
        max_batch_size=int(config["BATCH_SIZE"]), max_wait_ms=int(config["BATCH_WAIT_MS"]),
        precision=getattr(model, "precision", "float32"),
    )
