"""The served models: which models and versions the live model servers serve, as the web tier sees it.

Built from the model servers' heartbeats (cached briefly), so the web tier learns every model's
contract without importing Keras. `resolve` picks the version a request goes to: the one it
names, or the newest version some server has ready.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from keras_rest_api.errors import ModelNotFound, NoModelServer, clip
from keras_rest_api.queue.jobs import JobQueue
from keras_rest_api.queue.records import Heartbeat, ModelContract


@dataclass
class VersionView:
    """One version of one model across the live model servers."""

    contract: ModelContract
    states: dict[str, str] = field(default_factory=dict)  # server name -> loading | ready | draining

    @property
    def state(self) -> str:
        """ready if any server has it ready, else draining if any drains it, else loading."""
        for state in ("ready", "draining", "loading"):
            if state in self.states.values():
                return state
        return "loading"


def numeric(version: str) -> int:
    return int(version)


class ServedModels:
    """The served models, from live heartbeats, cached for `cache_seconds`."""

    def __init__(self, queue: JobQueue, heartbeat_ttl: float, cache_seconds: float, default_model: str) -> None:
        self._queue = queue
        self._heartbeat_ttl = heartbeat_ttl
        self._cache_seconds = cache_seconds
        self.default_model = default_model
        self._lock = threading.Lock()
        self._servers: list[Heartbeat] | None = None
        self._expires = 0.0

    def servers(self) -> list[Heartbeat]:
        """The live model servers' heartbeats (cached)."""
        now = time.monotonic()
        with self._lock:
            if self._servers is not None and now < self._expires:
                return self._servers
        servers = self._queue.live_servers(self._heartbeat_ttl)
        if servers:  # "none yet" is not cached: the first heartbeat after a restart counts at once
            with self._lock:
                self._servers, self._expires = servers, now + self._cache_seconds
        return servers

    def forget(self) -> None:
        with self._lock:
            self._servers = None

    def models(self) -> dict[str, dict[str, VersionView]]:
        """name -> version -> view, over every live model server."""
        table: dict[str, dict[str, VersionView]] = {}
        for server in self.servers():
            for served in server.models:
                contract = served.contract
                versions = table.setdefault(contract.name, {})
                view = versions.setdefault(contract.version, VersionView(contract))
                view.states[server.name] = served.state
        return table

    def default_name(self, table: dict[str, dict[str, VersionView]] | None = None) -> str:
        """The model POST /predict uses: DEFAULT_MODEL when served, else the only model served."""
        table = self.models() if table is None else table
        if not table:
            raise NoModelServer("No model server is running. Start run_model_server.py and retry.")
        if self.default_model in table:
            return self.default_model
        if len(table) == 1:
            return next(iter(table))
        raise ModelNotFound(
            f"The default model {self.default_model!r} is not served, and several models are: "
            f"{', '.join(sorted(table))}. Choose one: POST /models/<name>/predict, or set DEFAULT_MODEL.")

    def resolve(self, name: str | None = None, version: str | None = None) -> ModelContract:
        """The contract of the version a request for `name` (default model) and `version` (newest ready) goes to."""
        table = self.models()
        if name is None:
            name = self.default_name(table)
        versions = table.get(name)
        if not versions:
            if not table:
                raise NoModelServer("No model server is running. Start run_model_server.py and retry.")
            raise ModelNotFound(f"No model {clip(name)} is served. Served models: {', '.join(sorted(table))}.")
        if version is not None:
            view = versions.get(version)
            if view is None or view.state == "loading":
                served = ", ".join(v for v, view in sorted(versions.items(), key=lambda kv: numeric(kv[0]))
                                   if view.state != "loading")
                if view is not None:
                    raise NoModelServer(f"Version {clip(version)} of {clip(name)} is still loading. Retry shortly.")
                raise ModelNotFound(f"Version {clip(version)} of model {clip(name)} is not served. Served versions: {served}.")
            return view.contract
        ready = [v for v in versions.values() if v.state == "ready"]
        if not ready:
            raise NoModelServer(f"Model {clip(name)} has no version ready yet (loading). Retry shortly.")
        return max(ready, key=lambda view: numeric(view.contract.version)).contract
