"""Locust load test for the image-classification REST service (the same request as stress_test.py).

Each simulated user posts one image as multipart field ``image`` to ``/predict`` back to back,
and now and then asks ``/ready``. A 200 whose JSON body is not ``{"success": true, "predictions":
[...]}`` counts as a failure, as in stress_test.py.

    LOCUST_IMAGE=dog.jpg .venv/bin/locust -f locustfile.py --host http://127.0.0.1:8000      # web UI on :8089
    .venv/bin/locust -f locustfile.py --headless -u 8 -r 4 -t 30s --host http://127.0.0.1:8000 --only-summary

Settings from the environment: ``LOCUST_IMAGE`` (default ``dog.jpg``) is the file to post;
``LOCUST_TOP_K`` (optional) is sent as the ``top_k`` form field; ``API_KEY`` (optional, for a
service with API keys) is sent as ``Authorization: Bearer`` on every request. For a features
model, ``LOCUST_BODY`` names a JSON file (an instance, or ``{"instances": [...]}``) posted as the
body with Content-Type application/json instead of an image, to ``LOCUST_PATH`` (default
``/predict``, e.g. ``/models/diabetes/predict``).
"""
from __future__ import annotations

import json
import mimetypes
import os
import sys

from locust import HttpUser, constant, task

IMAGE_PATH = os.environ.get("LOCUST_IMAGE", "dog.jpg")
BODY_PATH = os.environ.get("LOCUST_BODY", "")
PREDICT_PATH = os.environ.get("LOCUST_PATH", "/predict")
TOP_K = os.environ.get("LOCUST_TOP_K", "")
# From the environment, not a command-line option: the key stays out of process lists.
API_KEY = os.environ.get("API_KEY", "").strip()


def _load_image(path: str) -> tuple[str, bytes, str]:
    """The multipart tuple for the image, or exit with a message that says what to set."""
    if not os.path.isfile(path):
        sys.stderr.write(
            f"locustfile.py: image file not found: {path!r} (cwd {os.getcwd()}).\n"
            f"Set LOCUST_IMAGE to an image to post, e.g. LOCUST_IMAGE=/path/to/dog.jpg\n"
        )
        raise SystemExit(2)
    with open(path, "rb") as fh:
        data = fh.read()
    name = os.path.basename(path)
    return name, data, mimetypes.guess_type(name)[0] or "application/octet-stream"


def _load_body(path: str) -> bytes:
    """The JSON body to post, or exit with a message that says what to set."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        json.loads(data)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"locustfile.py: LOCUST_BODY={path!r} is not a readable JSON file ({exc}).\n")
        raise SystemExit(2) from None
    return data


BODY = _load_body(BODY_PATH) if BODY_PATH else b""
IMAGE = ("", b"", "") if BODY else _load_image(IMAGE_PATH)


def _error_of(response) -> str:
    """The service's JSON error message (every error answer is JSON), else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return (response.text or "")[:200]
    if isinstance(body, dict) and body.get("error"):
        return str(body["error"])
    return (response.text or "")[:200]


class PredictUser(HttpUser):
    # Back to back, like stress_test.py's closed loop: each user has one request in flight.
    wait_time = constant(0)

    def on_start(self) -> None:
        if API_KEY:
            self.client.headers["Authorization"] = f"Bearer {API_KEY}"

    @task(20)
    def predict(self) -> None:
        data = {"top_k": TOP_K} if TOP_K else None
        if BODY:
            sent = self.client.post(PREDICT_PATH, data=BODY, headers={"Content-Type": "application/json"},
                                    name=PREDICT_PATH, catch_response=True)
        else:
            sent = self.client.post(PREDICT_PATH, files={"image": IMAGE}, data=data, name=PREDICT_PATH,
                                    catch_response=True)
        with sent as response:
            if response.status_code != 200:
                # 503 (queue full / no model server), 504 (timeout), 4xx, 500: name the cause.
                response.failure(f"{response.status_code}: {_error_of(response)}")
                return
            try:
                body = response.json()
            except ValueError:
                response.failure("200 without a JSON body")
                return
            if not (isinstance(body, dict) and body.get("success") is True
                    and isinstance(body.get("predictions"), list) and body["predictions"]):
                response.failure(f"200 without success=true and predictions: {response.text[:200]}")
            else:
                response.success()

    @task(1)
    def ready(self) -> None:
        # 200 while Redis answers and a model server is alive; 503 (a failure here) otherwise.
        self.client.get("/ready", name="/ready")
