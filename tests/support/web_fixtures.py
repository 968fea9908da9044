"""Fixtures for the web-tier tests: the Flask app against the real Redis, with a real model
server in a background thread, or only its heartbeat. A pytest plugin (tests/conftest.py)."""
from __future__ import annotations

import threading
from typing import Any, Callable, Iterator

import pytest
from flask.testing import FlaskClient

from keras_rest_api.model_server import ModelServer
from keras_rest_api.model_server.versions import contract_of
from keras_rest_api.queue import redis_users
from keras_rest_api.queue.jobs import JobQueue, queue_from_settings
from keras_rest_api.queue.records import Heartbeat, ServedModel
from keras_rest_api.web.app import create_app

SERVER_NAME = "test-model-server"


@pytest.fixture()
def web_config(config) -> dict[str, Any]:
    return {
        **config,
        "QUEUE_BLOCK_MS": 100,
        "BATCH_SIZE": 4,
        "BATCH_WAIT_MS": 0,
        "HEARTBEAT_INTERVAL": 0.5,
        "HEARTBEAT_TTL": 10.0,
        "METADATA_CACHE_SECONDS": 0.0,
        "REQUEST_TIMEOUT": 10.0,
        "MODEL_SERVER_NAME": SERVER_NAME,
    }


def heartbeat_of(model, name: str = SERVER_NAME) -> Heartbeat:
    """The heartbeat a model server serving `model` publishes."""
    return Heartbeat(name=name, models=[ServedModel(contract_of(model, {"BATCH_SIZE": 4, "BATCH_WAIT_MS": 0}))])


def make_queue(config: dict[str, Any]) -> JobQueue:
    return queue_from_settings(config, read_timeout=config["QUEUE_BLOCK_MS"] / 1000 + 5.0)


@pytest.fixture()
def model_server_web_config(web_config, redis_server) -> dict[str, Any]:
    """`web_config` as the model server's own ACL user."""
    return {**web_config, **redis_server.settings_for(redis_users.MODEL_SERVER)}


@pytest.fixture()
def model_server(model_server_web_config, tiny_model, redis_client) -> Iterator[ModelServer]:
    """A real ModelServer serving the tiny model with its production run loop, from a thread,
    connected as the model server's ACL user."""
    server = ModelServer(make_queue(model_server_web_config), tiny_model, model_server_web_config)
    server.warm_up()
    server.announce()  # visible to the web tier before the first request
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            server.run()
        except BaseException as exc:  # surfaced at teardown
            errors.append(exc)

    thread = threading.Thread(target=serve, name="model-server", daemon=True)
    thread.start()
    yield server
    server.stop()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the model server thread did not stop"
    assert not errors, f"the model server failed: {errors[0]!r}"


@pytest.fixture()
def heartbeat_only(model_server_web_config, tiny_model, redis_client) -> JobQueue:
    """A model server's heartbeat in Redis (written as the model server's ACL user), but nobody
    consuming the queue."""
    queue = make_queue(model_server_web_config).for_model(tiny_model.name, "1")
    queue.ensure_group()
    queue.heartbeat(heartbeat_of(tiny_model), ttl=30)
    return queue


@pytest.fixture()
def make_client(web_config) -> Callable[..., FlaskClient]:
    def make(**overrides: Any) -> FlaskClient:
        return create_app({**web_config, **overrides}).test_client()

    return make


@pytest.fixture()
def client(make_client) -> FlaskClient:
    return make_client()
