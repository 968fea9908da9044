"""Asynchronous jobs on the same queue: submit, then fetch the answer from GET /result/<id>."""
from __future__ import annotations

import time

import pytest

from keras_rest_api.model_server import ModelServer
from tests.support.web_checks import assert_json_error, assert_predictions, png_bytes


def fetch_until_done(client, status_url: str, seconds: float = 5.0):
    """A client polling its job URL (bounded), as a submit-then-poll client does."""
    deadline = time.monotonic() + seconds
    while True:
        response = client.get(status_url)
        if response.status_code != 202 or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


def test_async_query_parameter_answers_202_with_a_job_url(client, model_server):
    response = client.post("/predict?async=1", data=png_bytes(1), content_type="image/png")
    assert response.status_code == 202, response.get_data(as_text=True)
    body = response.get_json()
    assert body["success"] is True and body["status_url"] == f"/result/{body['id']}"
    assert response.headers["Location"] == body["status_url"]

    answer = fetch_until_done(client, body["status_url"])
    assert answer.status_code == 200
    assert_predictions(answer.get_json(), 5)
    # The answer stays for RESULT_TTL: fetching it again gives it again.
    assert client.get(body["status_url"]).get_json() == answer.get_json()


def test_prefer_respond_async_is_honoured(client, model_server):
    response = client.post("/predict?top_k=2", data=png_bytes(2), content_type="image/png",
                           headers={"Prefer": "respond-async, wait=5"})
    assert response.status_code == 202
    assert response.headers["Preference-Applied"] == "respond-async"
    assert_predictions(fetch_until_done(client, response.get_json()["status_url"]).get_json(), 2)


def test_a_job_not_yet_answered_is_202_pending_with_retry_after(client, heartbeat_only):
    body = client.post("/predict?async=1", data=png_bytes(3), content_type="image/png").get_json()
    pending = client.get(body["status_url"])
    assert pending.status_code == 202
    assert pending.get_json()["status"] == "pending"
    assert pending.headers["Retry-After"] == "1"


@pytest.mark.parametrize("job_id", ["0" * 32, "not-a-job", "../../etc/passwd"])
def test_unknown_or_malformed_job_ids_are_404(client, redis_client, job_id):
    assert_json_error(client.get(f"/result/{job_id}"), 404)


def test_a_slow_synchronous_request_turns_into_a_job_with_sync_wait_ms(make_client, heartbeat_only, web_config, tiny_model):
    client = make_client(SYNC_WAIT_MS=300)
    started = time.monotonic()
    response = client.post("/predict", data=png_bytes(4), content_type="image/png")
    assert 0.25 <= time.monotonic() - started < 2
    assert response.status_code == 202
    status_url = response.get_json()["status_url"]
    assert client.get(status_url).status_code == 202

    ModelServer(heartbeat_only, tiny_model, web_config).run(burst=True)  # a model server arrives
    assert_predictions(client.get(status_url).get_json(), 5)


def test_an_async_job_that_expires_in_the_queue_is_answered_504(make_client, heartbeat_only, web_config, tiny_model):
    client = make_client(ASYNC_TIMEOUT=0.1)
    status_url = client.post("/predict?async=1", data=png_bytes(5), content_type="image/png").get_json()["status_url"]
    time.sleep(0.2)

    ModelServer(heartbeat_only, tiny_model, web_config).run(burst=True)
    body = assert_json_error(client.get(status_url), 504)
    assert "expired" in body["error"]


def test_a_sync_wait_job_that_expires_in_the_queue_is_answered_504_not_left_pending(
        make_client, heartbeat_only, web_config, tiny_model):
    # SYNC_WAIT_MS turned the request into a job; its queue time (ASYNC_TIMEOUT) runs out
    # before a model server comes: the server that finally comes must say so.
    client = make_client(SYNC_WAIT_MS=100, ASYNC_TIMEOUT=0.3)
    response = client.post("/predict", data=png_bytes(6), content_type="image/png")
    assert response.status_code == 202
    status_url = response.get_json()["status_url"]
    time.sleep(0.4)

    ModelServer(heartbeat_only, tiny_model, web_config).run(burst=True)
    body = assert_json_error(client.get(status_url), 504)
    assert "expired" in body["error"]


def test_a_job_past_its_deadline_with_no_model_server_at_all_is_answered_504(make_client, heartbeat_only):
    client = make_client(SYNC_WAIT_MS=100, ASYNC_TIMEOUT=0.2)
    status_url = client.post("/predict", data=png_bytes(7), content_type="image/png").get_json()["status_url"]
    assert client.get(status_url).status_code == 202  # still within its time
    time.sleep(0.2 + 2.1)  # its deadline, plus the grace a late model server gets
    body = assert_json_error(client.get(status_url), 504)
    assert "expired" in body["error"]


def test_a_sync_wait_request_answered_in_time_is_a_plain_200(make_client, model_server):
    client = make_client(SYNC_WAIT_MS=5000)
    response = client.post("/predict", data=png_bytes(8), content_type="image/png")
    assert response.status_code == 200
    assert_predictions(response.get_json(), 5)
