"""Several models and versions at once: routing, GET /models, and a version rollout.

The web tier runs in-process against a real Redis; model servers are real ModelServers with
their production run loop, in threads.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import numpy as np
import pytest

from keras_rest_api.model_server import ModelServer
from tests.support.web_checks import assert_json_error, png_bytes
from tests.support.web_fixtures import make_queue


class Renamed:
    """A loaded model served under another name and version (the same network: cheap to build)."""

    def __init__(self, model: Any, name: str, version: str) -> None:
        self._model, self.name, self.version = model, name, version

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._model, attr)

    @property
    def contract(self) -> Any:
        base = getattr(self._model, "contract", None)
        return None if base is None else dataclasses.replace(base, name=self.name, version=self.version)

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        return self._model.predict(pixels)


class Serving:
    """A ModelServer run in a thread until `stop`."""

    def __init__(self, server: ModelServer) -> None:
        self.server = server
        server.announce()
        self.thread = threading.Thread(target=server.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture()
def serve(model_server_web_config, redis_client) -> Iterator:
    running: list[Serving] = []

    def start(models: Any, name: str, **overrides: Any) -> ModelServer:
        config = {**model_server_web_config, **overrides}
        server = ModelServer(make_queue(config), models, config, name=name)
        if not server.models.versions:
            server.start()
        running.append(Serving(server))
        return server

    yield start
    for serving in running:
        serving.stop()


def post(client, path: str = "/predict", seed: int = 1):
    return client.post(path, data=png_bytes(seed), content_type="image/png")


def test_each_model_has_its_own_route_and_the_default_is_the_configured_one(make_client, serve, tiny_model):
    serve(Renamed(tiny_model, "cats", "1"), "ms-cats")
    serve(Renamed(tiny_model, "dogs", "4"), "ms-dogs")
    client = make_client(DEFAULT_MODEL="dogs")
    for path, model, version in [("/predict", "dogs", "4"), ("/models/cats/predict", "cats", "1"),
                                 ("/models/dogs/versions/4/predict", "dogs", "4")]:
        body = post(client, path).get_json()
        assert body["success"] is True, body
        assert (body["model"], body["version"]) == (model, version)


def test_unknown_models_and_versions_are_404s_that_list_what_is_served(make_client, serve, tiny_model):
    serve(Renamed(tiny_model, "cats", "1"), "ms-cats")
    client = make_client()
    body = assert_json_error(post(client, "/models/horses/predict"), 404)
    assert "cats" in body["error"]
    body = assert_json_error(post(client, "/models/cats/versions/9/predict"), 404)
    assert "Served versions: 1" in body["error"]
    assert_json_error(client.get("/models/horses"), 404)


def test_several_models_and_no_default_served_asks_the_client_to_choose(make_client, serve, tiny_model):
    serve(Renamed(tiny_model, "cats", "1"), "ms-cats")
    serve(Renamed(tiny_model, "dogs", "1"), "ms-dogs")
    body = assert_json_error(post(make_client(DEFAULT_MODEL="nothing")), 404)
    assert "/models/<name>/predict" in body["error"] and "cats, dogs" in body["error"]


def test_get_models_lists_every_version_with_its_state_servers_and_contract(make_client, serve, tiny_model):
    serve(Renamed(tiny_model, "cats", "1"), "ms-a")
    serve(Renamed(tiny_model, "cats", "2"), "ms-b")
    body = make_client(DEFAULT_MODEL="cats").get("/models").get_json()
    assert body["default_model"] == "cats"
    [cats] = body["models"]
    assert [(v["version"], v["state"], v["servers"]) for v in cats["versions"]] == [
        ("1", "ready", ["ms-a"]), ("2", "ready", ["ms-b"])]
    assert cats["versions"][0]["contract"]["input_height"] == 32
    # The newest ready version takes the default traffic; the older one stays reachable by name.
    client = make_client(DEFAULT_MODEL="cats")
    assert post(client).get_json()["version"] == "2"
    assert post(client, "/models/cats/versions/1/predict").get_json()["version"] == "1"


class Folder:
    """A model source whose versions appear and disappear like folders in a repository."""

    def __init__(self, model: Any, name: str, versions: list[str], fail: set[str] = frozenset()) -> None:
        self.model, self.name, self.versions, self.fail = model, name, list(versions), set(fail)
        self.unloaded: list[str] = []

    def wanted_versions(self) -> list[str]:
        return self.versions[-1:]  # policy: latest 1

    def load(self, version: str) -> Any:
        if version in self.fail:
            raise ValueError(f"version {version}: config.json does not parse")
        return Renamed(self.model, self.name, version)


def test_a_new_version_rolls_in_under_load_with_no_failed_or_doubled_answer(make_client, serve, tiny_model, redis_client):
    folder = Folder(tiny_model, "cats", ["1"])
    server = serve([folder], "ms-1", REPOSITORY_POLL_SECONDS=0.1, DRAIN_GRACE_SECONDS=0.5)
    unloaded = []
    server.models.unload = lambda model: unloaded.append(model.version)
    client = make_client(DEFAULT_MODEL="cats", METADATA_CACHE_SECONDS=0.2)
    answers: list[tuple[int, str]] = []
    stop = threading.Event()

    def flood(seed: int) -> None:
        while not stop.is_set():
            response = post(client, seed=seed)
            answers.append((response.status_code, (response.get_json() or {}).get("version", "")))

    with ThreadPoolExecutor(4) as pool:
        for seed in range(4):
            pool.submit(flood, seed)
        time.sleep(0.5)
        folder.versions.append("2")  # a new version folder appears
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and "1" not in unloaded:
            time.sleep(0.1)
        time.sleep(0.3)
        stop.set()
    statuses = {status for status, _ in answers}
    versions = [version for _, version in answers]
    assert statuses == {200}, answers[-5:]
    assert "1" in versions and "2" in versions
    # Once version 2 answered, the default traffic never went back to version 1 for long: the
    # switch happens once, with at most the web tier's cache time of overlap.
    assert versions[-1] == "2"
    assert unloaded == ["1"]
    assert [key for key in server.models.versions] == [("cats", "2")]
    # The server's published figures still count version 1's batches after it was unloaded.
    assert sum(size * count for size, count in server.batch_sizes.items()) == len(answers)
    assert not list(redis_client.scan_iter(match=server.queue.keys.all_results))  # nothing answered twice


def test_a_bad_new_version_never_takes_traffic_from_the_good_one(make_client, serve, tiny_model, caplog):
    folder = Folder(tiny_model, "cats", ["1"], fail={"2"})
    server = serve([folder], "ms-1", REPOSITORY_POLL_SECONDS=0.1, DRAIN_GRACE_SECONDS=0.2)
    client = make_client(DEFAULT_MODEL="cats")
    folder.versions.append("2")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "cannot be served" not in caplog.text:
        time.sleep(0.05)
    assert "version 2 cannot be served: version 2: config.json does not parse" in caplog.text
    time.sleep(0.5)
    assert post(client).get_json()["version"] == "1"
    assert [key for key in server.models.versions] == [("cats", "1")]


def test_one_server_serves_two_models_from_their_own_queues(make_client, serve, tiny_model):
    from keras_rest_api.model_server.versions import FixedSource

    server = serve([FixedSource(Renamed(tiny_model, "cats", "1")), FixedSource(Renamed(tiny_model, "dogs", "1"))],
                   "ms-both")
    client = make_client(DEFAULT_MODEL="cats")
    with ThreadPoolExecutor(8) as pool:
        paths = ["/models/cats/predict", "/models/dogs/predict"] * 12
        bodies = list(pool.map(lambda p: post(client, p[1], seed=p[0]).get_json(), enumerate(paths)))
    assert [body["model"] for body in bodies] == [path.split("/")[2] for path in paths]
    assert all(body["success"] for body in bodies)
    # Each version ran its own batches: 12 images each, never mixed in one model call.
    for version in server.models.versions.values():
        assert sum(size * count for size, count in version.runner.batch_sizes.items()) == 12
