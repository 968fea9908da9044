"""Bodies of types the service does not parse are refused (415) before they are read, and the
metrics' method label stays within a fixed set (web/limits.py, web/metrics.py): the Flask app
against the real Redis. The same through real Apache: tests/system/test_slow_clients.py."""
from __future__ import annotations

import io
import re
from typing import Any

import pytest
from flask.testing import FlaskClient

from keras_rest_api.web.metrics import METHODS
from tests.support.hostile_inputs import encode, noise


def png() -> bytes:
    return encode(noise(48, 40), "PNG")


class TrackingStream(io.BytesIO):
    """A request body that records whether anything read it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.was_read = False

    def read(self, *args: Any) -> bytes:
        self.was_read = True
        return super().read(*args)

    def readline(self, *args: Any) -> bytes:
        self.was_read = True
        return super().readline(*args)


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", "application/json",
                                          "application/xml"])
def test_a_body_the_service_does_not_parse_is_a_415_before_it_is_read(client: FlaskClient, heartbeat_only,
                                                                      content_type):
    body = b"image=" + b"A" * 100_000
    stream = TrackingStream(body)
    response = client.post("/predict", input_stream=stream, content_type=content_type,
                           content_length=len(body))
    assert response.status_code == 415, response.get_data(as_text=True)
    assert response.is_json and response.json["success"] is False
    assert "multipart/form-data" in response.json["error"] and content_type in response.json["error"]
    assert not stream.was_read, "the body was read before it was refused"


@pytest.mark.parametrize("path", ["/health", "/nowhere"])
def test_the_415_comes_before_routing_for_any_path_with_a_body(client: FlaskClient, path):
    response = client.post(path, data=b"a=1", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415 and response.is_json


def test_v2_paths_are_left_to_their_own_routes(client: FlaskClient):
    # The v2 route answers (here: no model server), not the body-type check.
    response = client.post("/v2/models/x/infer", data=b"{}", content_type="application/json")
    assert response.status_code != 415, response.get_data(as_text=True)
    assert "Content-Type" not in response.get_data(as_text=True)


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
