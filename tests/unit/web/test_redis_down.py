"""Redis unreachable: both route families (/predict and the Open Inference Protocol's /v2) answer
503 with Retry-After and a JSON body, fast, and the answer names no address, port or Redis user
(those stay in the log)."""
from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from keras_rest_api.web.app import create_app
from tests.support.harness import PROJECT, free_port

USERNAME = "kras-web-secret-user"
PASSWORD = "kras-web-secret-password-" + "9" * 16
PHOTO = PROJECT / "samples" / "chelsea.jpg"


@pytest.fixture()
def port() -> int:
    """A loopback port nothing listens on."""
    return free_port()


@pytest.fixture()
def client(web_config: dict[str, Any], port: int, tmp_path: Path) -> FlaskClient:
    """The app pointed at a Redis that is not there, as a Redis user with a password (from its file)."""
    password_file = tmp_path / "redis-web.password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    return create_app({
        **web_config,
        "REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "REDIS_USERNAME": USERNAME,
        "REDIS_PASSWORD": "",
        "REDIS_PASSWORD_FILE": str(password_file),
        "REDIS_TLS_CA_FILE": "",
        "REDIS_TLS_CERT_FILE": "",
        "REDIS_TLS_KEY_FILE": "",
        "REDIS_CONNECT_TIMEOUT": 1.0,
        "RETRY_AFTER_SECONDS": 2,
    }).test_client()


def predict(client: FlaskClient):
    with open(PHOTO, "rb") as photo:
        return client.post("/predict", data={"image": (photo, "chelsea.jpg")}, content_type="multipart/form-data")


def infer(client: FlaskClient):
    """A valid v2 inference request: input `image` (BYTES, shape [1]) as the binary tensor data
    extension sends it (tritonclient's default): a JSON header, then each element with its
    4-byte little-endian length."""
    photo = PHOTO.read_bytes()
    blob = struct.pack("<I", len(photo)) + photo
    header = json.dumps({"id": "redis-down", "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                                         "parameters": {"binary_data_size": len(blob)}}],
                         "outputs": [{"name": "probabilities", "parameters": {"classification": 5}}]}).encode()
    return client.post("/v2/models/efficientnet_lite0/infer", data=header + blob,
                       headers={"Inference-Header-Content-Length": str(len(header))},
                       content_type="application/octet-stream")


@pytest.mark.parametrize("send, error_keys", [(predict, {"success", "error"}), (infer, {"error"})],
                         ids=["predict", "v2-infer"])
def test_redis_down_is_a_503_with_retry_after_that_discloses_nothing(client, port, send, error_keys):
    assert PHOTO.is_file(), PHOTO
    started = time.monotonic()
    response = send(client)
    elapsed = time.monotonic() - started

    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.headers["Retry-After"] == "2"
    assert response.mimetype == "application/json", response.headers
    body = response.get_json()
    assert set(body) == error_keys, body
    assert isinstance(body["error"], str) and "Redis" in body["error"]  # the queue, not a missing model server
    if "success" in body:
        assert body["success"] is False
    text = response.get_data(as_text=True)
    for secret in ("127.0.0.1", str(port), USERNAME, PASSWORD, "redis://"):
        assert secret not in text, f"the answer shows {secret!r}: {text}"
    assert elapsed < 3.0, f"answered after {elapsed:.1f} s"


# Every route that reaches Redis, with a key holder's credentials: a Redis that refuses the web
# tier's own password ("invalid username-password pair") is answered like any Redis failure.
ROUTES = [("GET", "/ready"), ("GET", "/models"), ("GET", "/models/tiny"), ("POST", "/predict"),
          ("POST", "/models/tiny/predict"), ("GET", "/result/" + "a" * 32), ("GET", "/metrics"),
          ("GET", "/v2/health/ready"), ("GET", "/v2/models/tiny"), ("GET", "/v2/models/tiny/ready"),
          ("POST", "/v2/models/tiny/infer"), ("POST", "/v2/repository/index")]


@pytest.mark.parametrize("method, path", ROUTES)
def test_a_redis_that_refuses_the_web_user_gets_one_generic_answer_on_every_route(
        web_config, redis_server, tmp_path, caplog, method, path):
    password_file = tmp_path / "wrong.password"
    password_file.write_text(PASSWORD + "\n")
    client = create_app({**web_config, "REDIS_USERNAME": "web", "REDIS_PASSWORD": "",
                         "REDIS_PASSWORD_FILE": str(password_file), "RETRY_AFTER_SECONDS": 2}).test_client()
    with open(PHOTO, "rb") as photo:
        if method == "GET":
            response = client.get(path)
        elif path.startswith("/v2/"):
            response = client.post(path, data=b"{}", content_type="application/json")
        else:
            response = client.post(path, data={"image": (photo, "chelsea.jpg")}, content_type="multipart/form-data")
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.headers["Retry-After"] == "2"
    assert response.get_json()["error"] == "The queue (Redis) is unavailable. Retry shortly."
    assert "username-password" in caplog.text  # the details are in the log
