"""End to end: real Apache (mod_wsgi-express, daemon mode), real Redis, a model-server process.

The model is a small Keras model built by the tests; what the API answers must be that model's
own output on the same pixels.
"""
from __future__ import annotations

import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import redis
import requests

from keras_rest_api.imaging.decode import decode_image
from tests.support.harness import Stack, running_stack, wait_until
from tests.support.hostile_inputs import AWKWARD_IMAGES, HOSTILE_UPLOADS
from tests.support.web_checks import png_bytes

pytestmark = pytest.mark.e2e

PREFIX = "e2e"
LIMITS = {"MAX_QUEUE_LENGTH": 20, "MAX_UPLOAD_BYTES": 2_000_000, "MAX_IMAGE_PIXELS": 4_000_000, "REQUEST_TIMEOUT": 3}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_model_files):
    settings = {
        **tiny_model_files, **LIMITS, "KEY_PREFIX": PREFIX, "BATCH_SIZE": 4, "BATCH_WAIT_MS": 20,
        "QUEUE_BLOCK_MS": 200, "WSGI_PROCESSES": 2, "WSGI_THREADS": 8, "WSGI_QUEUE_TIMEOUT": 10,
    }
    with running_stack(tmp_path_factory.mktemp("e2e"), settings) as s:
        yield s


def predict(stack: Stack, image: bytes, **kwargs) -> requests.Response:
    return requests.post(f"{stack.url}/predict", files={"image": ("x.png", image)}, timeout=30, **kwargs)


def assert_json_error(response: requests.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    body = response.json()
    assert body["success"] is False and body["error"]
    assert "<html" not in response.text.lower()
    return body


def test_ready_names_the_model_and_its_server(stack):
    body = requests.get(f"{stack.url}/ready", timeout=5).json()
    assert body["ready"] is True
    assert body["models"] == ["tiny"]
    assert body["model_servers_alive"] == 1


def test_concurrent_requests_each_get_the_models_own_answer(stack, tiny_model):
    images = [png_bytes(seed, size=(40 + seed, 30 + 2 * seed)) for seed in range(16)]
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda data: predict(stack, data, data={"top_k": "5"}), images))

    pixels = np.stack([decode_image(data, tiny_model.input_size, 10**8) for data in images])
    expected = tiny_model.predict(pixels)
    batch_sizes = []
    for response, row in zip(responses, expected):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["success"] is True
        got = {p["label"]: p["probability"] for p in body["predictions"]}
        want = {label: float(p) for label, p in zip(tiny_model.labels, row)}
        assert got == pytest.approx(want, abs=1e-4)
        probabilities = [p["probability"] for p in body["predictions"]]
        assert probabilities == sorted(probabilities, reverse=True)
        timing = dict(part.split(";dur=") for part in response.headers["Server-Timing"].split(", "))
        assert {"decode", "queue", "inference", "total"} <= set(timing)
        batch_sizes.append(float(timing["batch"]))
    # Sixteen concurrent requests must not each have run alone.
    assert max(batch_sizes) > 1


def test_top_k_and_raw_bodies(stack):
    response = requests.post(f"{stack.url}/predict?top_k=2", data=png_bytes(1),
                             headers={"Content-Type": "image/png"}, timeout=30)
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 2


@pytest.mark.parametrize(
    "send, status",
    [
        (lambda url: requests.post(url, files={"photo": ("x.png", png_bytes(1))}, timeout=10), 400),
        (lambda url: requests.post(url, files={"image": ("x.png", b"")}, timeout=10), 400),
        (lambda url: requests.post(url, files={"image": ("x.txt", b"hello, world")}, timeout=10), 400),
        (lambda url: requests.post(url, files={"image": ("x.png", png_bytes(2)[:200])}, timeout=10), 400),
        (lambda url: requests.post(url, files={"image": ("x.png", png_bytes(2))}, data={"top_k": "99"}, timeout=10), 400),
        (lambda url: requests.post(url, data="text", headers={"Content-Type": "text/plain"}, timeout=10), 415),
        # Over MAX_UPLOAD_BYTES: the app's 413; far over: Apache's own 413, also JSON.
        (lambda url: requests.post(url, files={"image": ("x.png", b"\0" * 2_500_000)}, timeout=10), 413),
        (lambda url: requests.post(url, files={"image": ("x.png", b"\0" * 6_000_000)}, timeout=10), 413),
        (lambda url: requests.post(url, files={"image": ("x.png", png_bytes(3, size=(3000, 2000)))}, timeout=10), 413),
        (lambda url: requests.get(url, timeout=10), 405),
        (lambda url: requests.get(url.replace("/predict", "/nowhere"), timeout=10), 404),
    ],
    ids=["missing-field", "empty", "text", "truncated", "bad-top_k", "wrong-content-type",
         "too-large-app", "too-large-apache", "too-many-pixels", "wrong-method", "unknown-url"],
)
def test_bad_requests_get_json_errors(stack, send, status):
    assert_json_error(send(f"{stack.url}/predict"), status)


def test_timeout_then_full_queue_then_recovery(stack):
    os.killpg(stack.model_server.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert_json_error(predict(stack, png_bytes(4)), 504)
        assert 2.5 <= time.monotonic() - started < 6

        client = redis.Redis.from_url(stack.redis.url)
        queue_key = stack.model_queue().stream
        fillers = []
        while client.xlen(queue_key) < LIMITS["MAX_QUEUE_LENGTH"]:
            fillers.append(client.xadd(queue_key, {"v": "1", "id": "filler"}))
        full = predict(stack, png_bytes(5))
        assert_json_error(full, 503)
        assert full.headers["Retry-After"] == "1"
        client.xdel(queue_key, *fillers)  # the timed-out job stays, claimed or not
    finally:
        os.killpg(stack.model_server.pid, signal.SIGCONT)
    assert predict(stack, png_bytes(6)).status_code == 200
    # The timed-out request was skipped by the model server, not answered into the void.
    wait_until(lambda: "past its deadline" in stack.log("model_server"), 5, "the expired job to be skipped")


@pytest.mark.parametrize("name", AWKWARD_IMAGES)
def test_awkward_images_are_classified(stack, name):
    response = predict(stack, AWKWARD_IMAGES[name]())
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 5


@pytest.mark.parametrize("name", HOSTILE_UPLOADS)
def test_hostile_uploads_get_a_4xx_json_error(stack, name):
    make, status = HOSTILE_UPLOADS[name]
    assert_json_error(predict(stack, make()), status)


@pytest.mark.parametrize("content_type", ["image/png", "application/octet-stream", "image/svg+xml", "text/html"])
def test_raw_bodies_of_any_content_type_get_200_or_a_4xx(stack, content_type):
    response = requests.post(f"{stack.url}/predict", data=HOSTILE_UPLOADS["html"][0](),
                             headers={"Content-Type": content_type}, timeout=10)
    # A body type the service never parses is refused from its headers (415).
    assert_json_error(response, 415 if content_type == "text/html" else 400)


def test_no_hostile_input_left_a_traceback_in_the_logs(stack):
    # Runs after the hostile-input tests above: rejections are logged as one line each.
    assert "Traceback" not in stack.log("apache")
    assert "Traceback" not in stack.log("model_server")


def predictions_counted(text: str) -> float:
    match = re.search(r'kras_http_requests_total\{endpoint="/predict",method="POST",status="200"\} ([0-9.]+)', text)
    return float(match.group(1)) if match else 0.0


def test_metrics_sum_every_apache_daemon_process(stack):
    before = predictions_counted(requests.get(f"{stack.url}/metrics", timeout=5).text)
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda seed: predict(stack, png_bytes(seed)).status_code, range(100, 124)))
    assert statuses == [200] * 24
    # Scrapes land on either daemon process; each must report the total of both.
    counts = set()
    for _ in range(12):
        response = requests.get(f"{stack.url}/metrics", timeout=5)
        counts.add(predictions_counted(response.text) - before)
    assert counts == {24.0}
    text = requests.get(f"{stack.url}/metrics", timeout=5).text
    assert re.search(r'kras_model_servers_alive\{model="tiny"\} 1\.0', text)


def test_a_forged_heartbeat_nested_100000_deep_is_skipped_on_every_route(stack):
    """One heartbeat of 100,000 '[' (anyone who can write to Redis can forge one) once made
    every route that reads heartbeats answer 500; it is now skipped, and the real server answers."""
    admin, keys = stack.redis.client(), stack.queue().keys
    admin.set(keys.server("forged"), b"[" * 100_000, px=60_000)
    admin.zadd(keys.servers, {"forged": time.time() + 60})
    try:
        assert requests.get(f"{stack.url}/ready", timeout=10).json()["model_servers_alive"] == 1
        assert requests.get(f"{stack.url}/models", timeout=10).status_code == 200
        assert requests.get(f"{stack.url}/v2/models/tiny", timeout=10).status_code == 200
        assert requests.get(f"{stack.url}/v2/health/ready", timeout=10).status_code == 200
        assert predict(stack, png_bytes(11)).status_code == 200
    finally:
        admin.delete(keys.server("forged"))
        admin.zrem(keys.servers, "forged")
    log = stack.log("apache")
    assert "Traceback" not in log and "ignoring an invalid heartbeat" in log


# Last: it stops Redis for good.
def test_redis_down_answers_503_quickly(stack):
    stack.redis.stop()
    started = time.monotonic()
    body = assert_json_error(predict(stack, png_bytes(7)), 503)
    assert time.monotonic() - started < 1.5
    assert "Redis" in body["error"]
    assert_json_error(requests.get(f"{stack.url}/ready", timeout=5), 503)
    assert requests.get(f"{stack.url}/health", timeout=5).status_code == 200
