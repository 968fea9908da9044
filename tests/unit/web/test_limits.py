"""Bodies of types the service does not parse are refused (415) before they are read, and the
metrics' method label stays within a fixed set (web/limits.py, web/metrics.py): the Flask app
against the real Redis. The same through real Apache: tests/system/test_slow_clients.py."""
from __future__ import annotations

import re

import pytest
from flask.testing import FlaskClient

from keras_rest_api.web.metrics import METHODS
from tests.support.body_stream import MeasuredBody
from tests.support.hostile_inputs import encode, noise


def png() -> bytes:
    return encode(noise(48, 40), "PNG")


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", "application/json",
                                          "application/xml"])
def test_a_body_the_service_does_not_parse_is_a_415_before_it_is_read(client: FlaskClient, heartbeat_only,
                                                                      content_type):
    body = b"image=" + b"A" * 100_000
    stream = MeasuredBody(body)
    response = client.post("/predict", input_stream=stream, content_type=content_type,
                           content_length=len(body))
    assert response.status_code == 415, response.get_data(as_text=True)
    assert response.is_json and response.json["success"] is False
    assert "multipart/form-data" in response.json["error"] and content_type in response.json["error"]
    assert stream.bytes_read == 0, f"{stream.bytes_read} of {len(body)} bytes were read before the refusal"


def test_the_measure_sees_a_body_that_was_read(client: FlaskClient, model_server):
    # The control for the test above: an accepted raw body, read through Werkzeug's
    # LimitedStream (readinto), shows up as read to its end.
    body = png()
    stream = MeasuredBody(body)
    response = client.post("/predict", input_stream=stream, content_type="image/png", content_length=len(body))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert stream.bytes_read == len(body)


@pytest.mark.parametrize("path", ["/health", "/nowhere"])
def test_the_415_comes_before_routing_for_any_path_with_a_body(client: FlaskClient, path):
    response = client.post(path, data=b"a=1", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415 and response.is_json


def test_v2_paths_are_left_to_their_own_routes(client: FlaskClient):
    # The v2 route answers (here: no model server), not the body-type check.
    response = client.post("/v2/models/x/infer", data=b"{}", content_type="application/json")
    # Its own answer exactly: a 500 (or any other status) must not pass as "not the 415".
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.is_json and "No model server is running" in response.json["error"]


@pytest.mark.parametrize("content_type", ["image/png", "application/octet-stream"])
def test_raw_image_bodies_are_still_accepted(client: FlaskClient, model_server, content_type):
    response = client.post("/predict", data=png(), content_type=content_type)
    assert response.status_code == 200, response.get_data(as_text=True)


def test_a_bodyless_post_without_a_type_is_a_415_that_says_what_to_send(client: FlaskClient, heartbeat_only):
    response = client.post("/predict")
    assert response.status_code == 415 and "multipart/form-data" in response.json["error"]


def test_the_method_label_is_one_of_a_fixed_set(client: FlaskClient):
    for method in ("BREW", "PROPFIND", "X" * 50, "DELETE"):
        client.open("/health", method=method)
    text = client.get("/metrics").get_data(as_text=True)
    methods = set(re.findall(r'kras_http_requests_total\{[^}]*method="([^"]*)"', text))
    assert methods <= METHODS | {"other"}, methods
    assert "other" in methods
