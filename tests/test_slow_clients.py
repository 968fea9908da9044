"""Slow and odd clients: trickling connections cannot starve normal clients, bodies of types the
service does not parse are refused before they are read, metric labels stay bounded.

Through real Apache: 40 connections trickling their headers and 40 trickling their bodies at a
byte a second, more than the daemon threads (2 x 8), while a normal client keeps getting its
answers in normal time; Apache reads bodies whole before dispatch (apache/buffer-bodies.conf)
and cuts trickling connections off after REQUEST_HEADER_TIMEOUT / REQUEST_BODY_TIMEOUT.
"""
from __future__ import annotations

import http.client
import io
import re
import socket
import threading
import time
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient

from harness import running_stack
from hostile_inputs import encode, noise
from metrics import METHODS

THREADS = 8
PROCESSES = 2
TRICKLERS = 40  # of each kind: more than the PROCESSES x THREADS daemon threads
HEADER_TIMEOUT = 5
BODY_TIMEOUT = 5


def png() -> bytes:
    return encode(noise(48, 40), "PNG")


# --- body types (Flask app against the real Redis) -------------------------------------------------

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


# --- trickling connections through Apache ----------------------------------------------------------

@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_model_files):
    settings = {
        **tiny_model_files, "KEY_PREFIX": "slow", "WSGI_PROCESSES": PROCESSES, "WSGI_THREADS": THREADS,
        "REQUEST_HEADER_TIMEOUT": HEADER_TIMEOUT, "REQUEST_BODY_TIMEOUT": BODY_TIMEOUT, "QUEUE_BLOCK_MS": 200,
    }
    with running_stack(tmp_path_factory.mktemp("slow"), settings) as s:
        yield s


class Tricklers:
    """Connections that send one byte a second each, on one thread; records when each was cut off."""

    def __init__(self, port: int, heads: list[bytes]) -> None:
        self.sockets = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in heads]
        for sock, head in zip(self.sockets, heads):
            sock.sendall(head)
            sock.setblocking(False)
        self.started = time.monotonic()
        self.cut: dict[int, tuple[float, bytes]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.cut) < len(self.sockets):
            for index, sock in enumerate(self.sockets):
                if index in self.cut:
                    continue
                try:
                    answer = sock.recv(200)
                    self.cut[index] = (time.monotonic() - self.started, answer)  # answered or closed
                    continue
                except BlockingIOError:
                    pass
                except OSError as exc:
                    self.cut[index] = (time.monotonic() - self.started, str(exc).encode())
                    continue
                try:
                    sock.send(b"a")
                except OSError as exc:
                    self.cut[index] = (time.monotonic() - self.started, str(exc).encode())
            self._stop.wait(1.0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self.sockets:
            sock.close()


@pytest.mark.e2e
def test_trickling_connections_do_not_starve_a_normal_client(stack):
    header_heads = [b"POST /predict HTTP/1.1\r\nHost: x\r\nX-Slow: "] * TRICKLERS
    body_heads = [b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                  b"Content-Length: 100000\r\n\r\n--b\r\n"] * TRICKLERS
    tricklers = Tricklers(stack.port, header_heads + body_heads)
    latencies = []
    try:
        deadline = time.monotonic() + max(HEADER_TIMEOUT, BODY_TIMEOUT) + 5
        while time.monotonic() < deadline:
            started = time.monotonic()
            response = requests.post(f"{stack.url}/predict", files={"image": ("x.png", png())}, timeout=30)
            latencies.append(time.monotonic() - started)
            assert response.status_code == 200, response.text
            time.sleep(0.25)
        cut = dict(tricklers.cut)
    finally:
        tricklers.close()
    print(f"normal client: {len(latencies)} requests, slowest {max(latencies):.3f} s, median "
          f"{sorted(latencies)[len(latencies) // 2]:.3f} s; tricklers cut off: {len(cut)} of {2 * TRICKLERS}, "
          f"last after {max((t for t, _ in cut.values()), default=0):.1f} s")
    assert max(latencies) < 2.0, latencies
    # Every trickler was cut off by Apache's read timeouts (408), none got to the application.
    assert len(cut) == 2 * TRICKLERS, f"{2 * TRICKLERS - len(cut)} trickling connections still open"
    assert all(seconds <= max(HEADER_TIMEOUT, BODY_TIMEOUT) + 3 for seconds, _ in cut.values()), cut
    assert all(answer.startswith(b"HTTP/1.1 408") or not answer for _, answer in cut.values()), cut


@pytest.mark.e2e
def test_a_form_urlencoded_body_is_a_json_415_through_apache(stack):
    response = requests.post(f"{stack.url}/predict", data={"image": "A" * 1_000_000}, timeout=30)
    assert response.status_code == 415, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["success"] is False


@pytest.mark.e2e
def test_an_honest_upload_at_a_steady_rate_is_not_cut_off(stack):
    data = encode(noise(600, 400), "PNG")  # ~700 KB
    assert len(data) > 500_000

    def paced():  # 100 KB every 0.2 s: 500 KB/s, well above REQUEST_BODY_MIN_RATE
        for start in range(0, len(data), 100_000):
            yield data[start:start + 100_000]
            time.sleep(0.2)

    connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=60)
    try:
        connection.request("POST", "/predict", body=paced(),
                           headers={"Content-Type": "image/png", "Content-Length": str(len(data))})
        response = connection.getresponse()
        assert response.status == 200, response.read()
    finally:
        connection.close()
