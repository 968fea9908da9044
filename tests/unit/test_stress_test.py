"""Tests for the load client (keras_rest_api.stress: stress_test.py, the `keras-stress-test` command)
against a tiny in-process HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from keras_rest_api import stress

GOOD_BODY = json.dumps({"success": True, "predictions": [
    {"label": "beagle", "probability": 0.9}, {"label": "basset", "probability": 0.05}]}).encode()


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 so the closed loop's sessions can keep connections alive.
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        payload = self.rfile.read(length)
        srv: _Server = self.server  # type: ignore[assignment]
        with srv.lock:
            srv.count += 1
            n = srv.count
        if self.path != "/predict":
            self._reply(404, b'{"success": false, "error": "not found"}')
            return
        if self.headers.get("Content-Type") == "application/json":  # a features model's instance
            with srv.lock:
                srv.bodies.append(json.loads(payload))
            # A batch API (BentoML) answers a list: one answer per instance sent.
            answers = {"list": [json.loads(GOOD_BODY)], "badlist": [json.loads(GOOD_BODY), {"success": False}]}
            self._reply(200, json.dumps(answers[srv.mode]).encode() if srv.mode in answers else GOOD_BODY)
            return
        if b'name="image"' not in payload:
            self._reply(400, b'{"success": false, "error": "no image field"}')
            return
        if srv.delay:
            time.sleep(srv.delay)
        timing = {"Server-Timing": "decode;dur=3.0, queue;dur=10, inference;dur=40.5"}
        if srv.mode == "some503" and n % 3 == 0:
            self._reply(503, b'{"success": false, "error": "queue full"}', {"Retry-After": "1"})
        elif srv.mode == "badbody":
            self._reply(200, b'{"success": true, "predictions": []}', timing)
        else:
            self._reply(200, GOOD_BODY, timing if srv.mode == "some503" else None)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.count = 0
        self.mode = "ok"
        self.delay = 0.0
        self.bodies: list[object] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/predict"


@pytest.fixture
def server():
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def image(tmp_path: Path) -> Path:
    # The fake server never decodes it, so any bytes will do.
    path = tmp_path / "dog.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg \xff\xd9")
    return path


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- percentile -----------------------------------------------------------------

def test_percentile_known_values():
    data = [1, 2, 3, 4]
    assert stress.percentile(data, 50) == 2.5
    assert stress.percentile(data, 0) == 1
    assert stress.percentile(data, 100) == 4
    assert stress.percentile(list(range(1, 101)), 95) == pytest.approx(95.05)
    assert stress.percentile([7.0], 99) == 7.0
    assert stress.percentile([3, 1, 2], 50) == 2  # unsorted input
    with pytest.raises(ValueError):
        stress.percentile([], 50)


def test_parse_server_timing():
    header = 'decode;dur=3.1, queue;desc="a, b";dur=10.2, inference;dur=40, cache;desc=hit'
    assert stress.parse_server_timing(header) == {"decode": 3.1, "queue": 10.2, "inference": 40.0}
    assert stress.parse_server_timing("") == {}


# --- flood ----------------------------------------------------------------------

def test_flood_sends_exactly_n_all_ok(server, image):
    s = stress.run_flood(server.url, image, requests_total=20, interval=0.0, timeout=5)
    assert server.count == 20
    assert (s["sent"], s["ok"], s["failed"], s["answered"]) == (20, 20, 0, 20)
    assert s["failures"] == {}
    assert s["latency_ms"]["count"] == 20
    assert s["throughput_rps"] > 0
    assert s["server_timing_ms"] == {}


def test_flood_counts_503_and_server_timing(server, image):
    server.mode = "some503"
    s = stress.run_flood(server.url, image, requests_total=12, interval=0.001, timeout=5)
    assert server.count == 12
    assert s["sent"] == 12 and s["ok"] == 8 and s["failed"] == 4
    assert s["failures"] == {"503": 4}
    assert "queue full" in s["failure_examples"]["503"]
    assert "Retry-After: 1" in s["failure_examples"]["503"]
    st = s["server_timing_ms"]
    assert set(st) == {"decode", "queue", "inference"}
    assert st["inference"]["count"] == 8
    assert st["inference"]["mean"] == pytest.approx(40.5)
    assert st["decode"]["p95"] == pytest.approx(3.0)


def test_flood_bad_body_is_failure(server, image):
    server.mode = "badbody"
    s = stress.run_flood(server.url, image, requests_total=5, interval=0.0, timeout=5)
    assert s["ok"] == 0 and s["failures"] == {"bad body": 5}


def test_flood_connection_error_and_timeout(server, image):
    url = f"http://127.0.0.1:{_closed_port()}/predict"
    s = stress.run_flood(url, image, requests_total=3, interval=0.0, timeout=2)
    assert s["failures"] == {"ConnectionError": 3}
    assert s["latency_ms"] is None  # nothing answered

    server.delay = 0.5
    s = stress.run_flood(server.url, image, requests_total=2, interval=0.0, timeout=0.1)
    assert s["failures"] == {"Timeout": 2}


def test_flood_stop_event_stops_sending(server, image):
    stop = threading.Event()
    threading.Timer(0.15, stop.set).start()
    t0 = time.perf_counter()
    s = stress.run_flood(server.url, image, requests_total=1000, interval=0.05,
                              timeout=5, stop_event=stop)
    assert time.perf_counter() - t0 < 2
    assert s["interrupted"] is True
    assert 1 <= s["sent"] < 20
    assert s["ok"] == s["sent"] and s["failed"] == 0


# --- closed loop -----------------------------------------------------------------

def test_closed_loop_stops_near_duration(server, image):
    t0 = time.perf_counter()
    s = stress.run_closed_loop(server.url, image, concurrency=4, duration=0.5, timeout=5)
    elapsed = time.perf_counter() - t0
    assert 0.45 <= elapsed < 1.5
    assert s["sent"] >= 4
    assert s["ok"] == s["sent"] == server.count
    assert s["failed"] == 0
    assert s["wall_s"] <= elapsed


# --- CLI ------------------------------------------------------------------------

def test_main_exit_0_and_json(server, image, tmp_path, capsys):
    out = tmp_path / "summary.json"
    rc = stress.main([server.url, "--image", str(image), "--requests", "6",
                           "--interval", "0", "--json", str(out), "--quiet"])
    assert rc == 0
    printed = capsys.readouterr()
    assert "sent        6" in printed.out
    assert "latency ms" in printed.out
    assert printed.err == ""  # --quiet: no progress line
    data = json.loads(out.read_text())
    assert data["sent"] == 6 and data["ok"] == 6 and data["failed"] == 0


def test_main_exit_1_on_failures(server, image, capsys):
    server.mode = "some503"
    rc = stress.main(["--url", server.url, "--image", str(image), "--requests", "6",
                           "--interval", "0.001"])
    assert rc == 1
    captured = capsys.readouterr()
    assert "503: 2" in captured.out
    assert "server timing ms" in captured.out
    assert "sent 6/6" in captured.err  # progress line (plain, not a TTY)


def test_main_closed_loop_cli(server, image, capsys):
    rc = stress.main([server.url, "--image", str(image), "--concurrency", "2",
                           "--duration", "0.3", "--quiet"])
    assert rc == 0
    assert "closed loop: 2 workers" in capsys.readouterr().out


def test_main_missing_image_exit_2(tmp_path, capsys):
    missing = tmp_path / "nope.jpg"
    rc = stress.main(["--image", str(missing), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "image file not found" in err and "nope.jpg" in err


# --- API keys -------------------------------------------------------------------

KEY = "load-" + "3d" * 20


@pytest.fixture()
def keyed_service(make_client, model_server):
    """The real web app, with API keys, over real HTTP (werkzeug's server in a thread), a real
    model server and Redis: what the load client sends must pass the real web/auth.py."""
    from werkzeug.serving import make_server

    app = make_client(API_KEYS=f"load:{KEY}").application
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{http.server_port}/predict"
    http.shutdown()
    thread.join(5)


@pytest.fixture()
def png(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "dog.png"
    Image.new("RGB", (40, 30), (200, 120, 40)).save(path)
    return path


def test_an_api_key_goes_as_a_bearer_header_to_a_service_with_keys(keyed_service, png, monkeypatch, capsys):
    monkeypatch.delenv("API_KEY", raising=False)
    summary = stress.run_flood(keyed_service, png, requests_total=4, interval=0, timeout=20, api_key=KEY)
    assert summary["ok"] == 4 and summary["failed"] == 0, summary
    summary = stress.run_closed_loop(keyed_service, png, concurrency=2, duration=0.5, timeout=20, api_key=KEY)
    assert summary["ok"] >= 2 and summary["failed"] == 0, summary

    # The CLI: --api-key, or the API_KEY environment variable (kept out of process lists).
    assert stress.main([keyed_service, "--image", str(png), "--requests", "3", "--interval", "0",
                             "--quiet", "--api-key", KEY]) == 0
    monkeypatch.setenv("API_KEY", KEY)
    assert stress.main([keyed_service, "--image", str(png), "--requests", "3", "--interval", "0", "--quiet"]) == 0
    assert KEY not in capsys.readouterr().out  # the summary never shows the key


@pytest.mark.parametrize("key", [None, KEY[:-1]])
def test_without_the_right_key_every_request_is_a_401_with_the_services_reason(keyed_service, png, monkeypatch,
                                                                               capsys, key):
    monkeypatch.delenv("API_KEY", raising=False)
    argv = [keyed_service, "--image", str(png), "--requests", "3", "--interval", "0", "--quiet"]
    assert stress.main(argv + (["--api-key", key] if key else [])) == 1
    out = capsys.readouterr().out
    assert "401: 3" in out
    assert ("is not valid" if key else "An API key is required") in out


def test_an_empty_api_key_option_is_a_usage_error(image):
    with pytest.raises(SystemExit) as exc:
        stress.main(["--image", str(image), "--api-key", " "])
    assert exc.value.code == 2


def test_main_rejects_mixed_modes(image):
    with pytest.raises(SystemExit) as exc:
        stress.main(["--image", str(image), "--concurrency", "2", "--requests", "5"])
    assert exc.value.code == 2


def test_a_json_body_floods_a_features_model_with_that_json(server, tmp_path, capsys):
    instance = {"age": 48, "sex": "2", "bmi": 27.5}
    body = tmp_path / "patient.json"
    body.write_text(json.dumps(instance))
    assert stress.main([server.url, "--body", str(body), "--requests", "5", "--interval", "0", "--quiet"]) == 0
    assert server.bodies == [instance] * 5
    assert "5" in capsys.readouterr().out


def test_a_body_that_is_not_json_is_refused_before_sending(server, tmp_path, capsys):
    body = tmp_path / "patient.json"
    body.write_text("{age: 48")
    assert stress.main([server.url, "--body", str(body), "--requests", "1", "--quiet"]) == 2
    assert "not valid JSON" in capsys.readouterr().err and server.count == 0


@pytest.mark.parametrize("mode, failed", [("list", 0), ("badlist", 2)])
def test_a_batch_apis_list_answer_to_a_json_body_is_good_only_when_every_item_is(server, tmp_path, mode, failed):
    server.mode = mode
    body = tmp_path / "one.json"
    body.write_text('{"instances": [{"age": 1}]}')
    summary = stress.run_flood(server.url, body, requests_total=2, interval=0)
    assert summary["ok"] == 2 - failed and summary["failed"] == failed
