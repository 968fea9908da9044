"""Slow and odd clients through real Apache: trickling connections cannot starve normal clients,
and a body of a type the service does not parse is a JSON 415 (refused before it is read: the
in-process tests are tests/unit/web/test_limits.py).

40 connections trickle their headers and 40 their bodies at a byte a second, more than the daemon
threads (2 x 8), while a normal client keeps getting its answers in normal time; Apache reads
bodies whole before dispatch (apache/buffer-bodies.conf) and cuts trickling connections off after
REQUEST_HEADER_TIMEOUT / REQUEST_BODY_TIMEOUT.
"""
from __future__ import annotations

import http.client
import socket
import threading
import time

import pytest
import requests

from tests.support.harness import running_stack
from tests.support.hostile_inputs import encode, noise

THREADS = 8
PROCESSES = 2
TRICKLERS = 40  # of each kind: more than the PROCESSES x THREADS daemon threads
HEADER_TIMEOUT = 5
BODY_TIMEOUT = 5


def png() -> bytes:
    return encode(noise(48, 40), "PNG")


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
