"""The web tier: the Flask app against a real Redis, answered by a real in-process model server."""
from __future__ import annotations

import io
import re
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np
import pytest

from keras_rest_api.imaging.decode import decode_image
from tests.support.harness import PROJECT, free_port
from tests.support.web_checks import assert_json_error, assert_predictions, png_bytes, post_image
from tests.support.web_fixtures import SERVER_NAME, heartbeat_of, make_queue

HEX_ID = re.compile(r"^[0-9a-f]{32}$")


# --- answers from the model ---------------------------------------------------------------------

def test_multipart_upload_is_answered_with_the_models_own_top_5(client, model_server, tiny_model):
    data = png_bytes(1)
    response = post_image(client, data)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    predictions = assert_predictions(response.get_json(), 5)

    expected = tiny_model.predict(decode_image(data, tiny_model.input_size, 50_000_000)[None])[0]
    assert {p["label"] for p in predictions} == set(tiny_model.labels)
    for p in predictions:
        assert p["probability"] == pytest.approx(float(expected[tiny_model.labels.index(p["label"])]), abs=1e-5)


def test_raw_image_body_is_accepted(client, model_server):
    response = client.post("/predict", data=png_bytes(2), content_type="image/png")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert_predictions(response.get_json(), 5)


def test_top_k_limits_the_number_of_predictions(client, model_server):
    response = post_image(client, png_bytes(3), top_k="3")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert_predictions(response.get_json(), 3)


def test_top_k_in_the_query_string_works_with_a_raw_body(client, model_server):
    response = client.post("/predict?top_k=2", data=png_bytes(4), content_type="image/png")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert_predictions(response.get_json(), 2)


def test_top_k_above_the_number_of_classes_returns_every_class(client, model_server, tiny_model):
    response = post_image(client, png_bytes(5), top_k="20")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert_predictions(response.get_json(), len(tiny_model.labels))


def test_server_timing_reports_decode_queue_inference_and_total(client, model_server):
    response = post_image(client, png_bytes(6))
    assert response.status_code == 200
    timing = {}
    for part in response.headers["Server-Timing"].split(","):
        name, _, duration = part.strip().partition(";dur=")
        timing[name] = float(duration)
    assert {"decode", "queue", "inference", "total"} <= set(timing)
    assert all(value >= 0 for value in timing.values())
    assert timing["total"] >= timing["decode"]
    assert timing["total"] >= timing["inference"]


def test_concurrent_requests_each_get_their_own_answer(make_client, model_server, tiny_model):
    images = [png_bytes(100 + n) for n in range(6)]
    responses: dict[int, Any] = {}
    # Apps are built up front: building Flask apps in several threads at once trips a CPython
    # 3.11 bug in ast.parse (werkzeug compiles its URL rules), unrelated to serving requests.
    clients = [make_client() for _ in images]

    def send(n: int) -> None:
        responses[n] = post_image(clients[n], images[n], top_k="5")

    threads = [threading.Thread(target=send, args=(n,)) for n in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    for n, data in enumerate(images):
        assert responses[n].status_code == 200
        expected = tiny_model.predict(decode_image(data, tiny_model.input_size, 50_000_000)[None])[0]
        top = responses[n].get_json()["predictions"][0]
        assert top["label"] == tiny_model.labels[int(np.argmax(expected))]
        assert top["probability"] == pytest.approx(float(expected.max()), abs=1e-5)


# --- invalid requests ---------------------------------------------------------------------------

@pytest.mark.parametrize("top_k", ["0", "21", "abc", "-1", "2.5"])
def test_top_k_outside_1_to_max_is_a_400(client, heartbeat_only, top_k):
    body = assert_json_error(post_image(client, png_bytes(), top_k=top_k), 400)
    assert "top_k" in body["error"]


def test_missing_image_field_is_a_400_that_names_the_field(client, heartbeat_only):
    response = client.post("/predict", data={"file": (io.BytesIO(png_bytes()), "x.png")},
                           content_type="multipart/form-data")
    body = assert_json_error(response, 400)
    assert "'image'" in body["error"]


def test_empty_file_is_a_400(client, heartbeat_only):
    body = assert_json_error(post_image(client, b""), 400)
    assert "empty" in body["error"].lower()


def test_text_file_is_a_400(client, heartbeat_only):
    body = assert_json_error(post_image(client, b"just some notes\n" * 20, filename="notes.txt"), 400)
    assert "not an image" in body["error"]


def test_truncated_image_is_a_400(client, heartbeat_only):
    data = png_bytes(7, size=(64, 64))
    assert_json_error(post_image(client, data[: len(data) // 2]), 400)


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", None])
def test_a_body_that_is_neither_multipart_nor_an_image_type_is_a_415(client, heartbeat_only, content_type):
    kwargs = {"content_type": content_type} if content_type else {}
    body = assert_json_error(client.post("/predict", data=png_bytes(), **kwargs), 415)
    assert "Content-Type" in body["error"]


def test_multipart_upload_over_max_upload_bytes_is_a_413(make_client, heartbeat_only):
    client = make_client(MAX_UPLOAD_BYTES=10_000)
    data = png_bytes(8, size=(100, 100))
    assert len(data) > 10_000
    body = assert_json_error(post_image(client, data), 413)
    assert "10000" in body["error"]


def test_raw_upload_over_max_upload_bytes_is_a_413(make_client, heartbeat_only):
    client = make_client(MAX_UPLOAD_BYTES=10_000)
    assert_json_error(client.post("/predict", data=png_bytes(8, size=(100, 100)), content_type="image/png"), 413)


def test_a_streamed_raw_upload_over_max_upload_bytes_is_a_413(make_client, model_server):
    client = make_client(MAX_UPLOAD_BYTES=10_000)
    data = png_bytes(10, size=(20, 20)) + b"\x00" * 50_000  # Pillow ignores bytes after IEND
    response = client.post("/predict", input_stream=io.BytesIO(data), content_type="image/png",
                           headers={"Transfer-Encoding": "chunked"},
                           environ_overrides={"wsgi.input_terminated": True})
    assert_json_error(response, 413)


def test_image_over_max_image_pixels_is_a_413(make_client, heartbeat_only):
    client = make_client(MAX_IMAGE_PIXELS=1000)
    body = assert_json_error(post_image(client, png_bytes(9, size=(40, 30))), 413)
    assert "1000" in body["error"]


# --- the service unable to answer ---------------------------------------------------------------

def test_a_full_queue_is_a_503_with_retry_after(make_client, heartbeat_only):
    client = make_client(MAX_QUEUE_LENGTH=0, RETRY_AFTER_SECONDS=3)
    response = post_image(client, png_bytes())
    body = assert_json_error(response, 503)
    assert response.headers["Retry-After"] == "3"
    assert "full" in body["error"]
    assert heartbeat_only.length() == 0


def test_no_answer_in_time_is_a_504(make_client, heartbeat_only):
    client = make_client(REQUEST_TIMEOUT=0.5)
    started = time.monotonic()
    response = post_image(client, png_bytes())
    elapsed = time.monotonic() - started
    assert_json_error(response, 504)
    assert 0.45 <= elapsed < 2.0


def test_no_model_server_is_a_503_with_retry_after(client, redis_client):
    response = post_image(client, png_bytes())
    body = assert_json_error(response, 503)
    assert "Retry-After" in response.headers
    assert "model server" in body["error"]


def test_an_expired_heartbeat_does_not_count_as_a_model_server(make_client, model_server_web_config, tiny_model,
                                                               redis_client):
    queue = make_queue(model_server_web_config)
    queue.heartbeat(heartbeat_of(tiny_model), ttl=0.2)
    time.sleep(0.3)
    client = make_client(HEARTBEAT_TTL=0.2)
    assert_json_error(post_image(client, png_bytes()), 503)
    assert client.get("/ready").status_code == 503


def test_redis_unreachable_is_a_fast_503(make_client):
    client = make_client(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", REDIS_CONNECT_TIMEOUT=1.0)
    started = time.monotonic()
    response = post_image(client, png_bytes())
    elapsed = time.monotonic() - started
    body = assert_json_error(response, 503)
    assert "Redis" in body["error"]
    assert "127.0.0.1" not in body["error"] and "Error" not in body["error"]  # no internals
    assert "Retry-After" in response.headers
    assert elapsed < 1.5

    ready = client.get("/ready")
    assert_json_error(ready, 503)
    assert ready.get_json()["ready"] is False


# --- the other endpoints ------------------------------------------------------------------------

def test_health_is_200_without_redis(make_client):
    response = make_client(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0").get("/health")
    assert response.status_code == 200
    assert response.get_json()["success"] is True


def test_ready_lists_the_live_model_server_and_its_model_to_a_key_holder(make_client, model_server, tiny_model):
    key = "k" * 32
    response = make_client(API_KEYS=f"ops:{key}").get("/ready", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["ready"] is True and body["success"] is True
    assert body["models"] == [tiny_model.name]
    assert [s["name"] for s in body["model_servers"]] == [SERVER_NAME]
    assert body["model_servers"][0]["models"] == [f"{tiny_model.name}:1:ready"]
    assert {"host", "pid"} <= set(body["model_servers"][0])


def test_ready_of_an_open_api_says_how_many_model_servers_but_not_where(client, model_server, tiny_model):
    response = client.get("/ready")
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body == {"success": True, "ready": True, "models": [tiny_model.name], "model_servers_alive": 1}


def test_ready_is_503_without_a_model_server(client, redis_client):
    body = assert_json_error(client.get("/ready"), 503)
    assert body["ready"] is False
    assert body["model_servers_alive"] == 0


def test_index_describes_the_service_as_json(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert "POST /predict" in response.get_json()["endpoints"]


def test_unknown_url_is_a_json_404(client):
    assert_json_error(client.get("/no/such/page"), 404)


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_predict_with_the_wrong_method_is_a_json_405(client, method):
    assert_json_error(getattr(client, method)("/predict"), 405)


def test_post_to_a_read_only_endpoint_is_a_json_405(client):
    assert_json_error(client.post("/health"), 405)


# --- request ids --------------------------------------------------------------------------------

def test_a_valid_request_id_is_echoed(client, model_server):
    response = client.post("/predict", data=png_bytes(), content_type="image/png",
                           headers={"X-Request-ID": "client-req-42"})
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "client-req-42"


@pytest.mark.parametrize("supplied", ["a b", "../etc/passwd", "x" * 65, "id;drop"])
def test_an_invalid_request_id_is_replaced(client, supplied):
    response = client.get("/health", headers={"X-Request-ID": supplied})
    assert response.headers["X-Request-ID"] != supplied
    assert HEX_ID.match(response.headers["X-Request-ID"])


def test_a_request_id_is_given_when_none_is_supplied_even_on_errors(client):
    response = client.get("/missing")
    assert response.status_code == 404
    assert HEX_ID.match(response.headers["X-Request-ID"])


def test_the_same_request_id_twice_gets_two_separate_answers(client, model_server, tiny_model):
    headers = {"X-Request-ID": "same-id"}
    images = [png_bytes(11), png_bytes(12)]
    responses = [client.post("/predict", data=data, content_type="image/png", headers=headers) for data in images]
    for data, response in zip(images, responses):
        assert response.status_code == 200
        assert response.headers["X-Request-ID"] == "same-id"
        expected = tiny_model.predict(decode_image(data, tiny_model.input_size, 50_000_000)[None])[0]
        got = {p["label"]: p["probability"] for p in response.get_json()["predictions"]}
        assert got == pytest.approx({label: float(p) for label, p in zip(tiny_model.labels, expected)}, abs=1e-5)


# --- the web tier stays light -------------------------------------------------------------------

def test_the_web_module_does_not_import_tensorflow_or_keras():
    # What Apache's daemons load (keras_rest_api.wsgi and the app), and the development server.
    code = ("import sys, keras_rest_api.wsgi, keras_rest_api.web.app, keras_rest_api.web.devserver, run_web_server; "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')); "
            "assert not heavy, heavy")
    completed = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr


def test_metrics_count_requests_and_publish_the_model_servers_figures(client, model_server):
    assert post_image(client, png_bytes(1)).status_code == 200
    model_server.announce()  # publish the figures of that batch now
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    assert re.search(r'kras_http_requests_total\{endpoint="/predict",method="POST",status="200"\} [1-9]', text)
    assert "kras_http_request_duration_seconds_bucket" in text
    assert 'kras_queue_length{model="tiny",version="1"} 0.0' in text
    assert re.search(r'kras_model_servers_alive\{model="tiny"\} 1\.0', text)
    assert re.search(rf'kras_batch_size_count\{{server="{SERVER_NAME}"\}} [1-9]', text)
    assert re.search(rf'kras_inference_duration_seconds_count\{{server="{SERVER_NAME}"\}} [1-9]', text)
    assert f'kras_jobs_redelivered_total{{server="{SERVER_NAME}"}} 0.0' in text
