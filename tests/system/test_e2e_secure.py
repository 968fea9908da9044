"""End to end with every lock on: API keys on the web tier (real Apache), and Redis that speaks
only TLS and knows each tier as its own ACL user (the harness always starts Redis with ACL users;
here with TLS too). Nothing secret may show in answers, logs or process arguments.
"""
from __future__ import annotations

import io
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import redis
import requests
from PIL import Image

from keras_rest_api.queue import redis_users
from tests.support.harness import PROJECT, Stack

pytestmark = pytest.mark.e2e

KEY = "e2e-" + "5f" * 20
OTHER_KEY = "e2e-" + "9c" * 20


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_model_files):
    if shutil.which("apxs") is None or not (PROJECT / ".venv/bin/mod_wsgi-express").exists():
        pytest.fail("Apache/mod_wsgi is not installed; run ./test.sh, which installs it")
    settings = {**tiny_model_files, "KEY_PREFIX": "secure", "BATCH_SIZE": 4, "QUEUE_BLOCK_MS": 200,
                "WSGI_PROCESSES": 1, "WSGI_THREADS": 4, "REQUEST_TIMEOUT": 10,
                "API_KEYS": f"tester:{KEY},other:{OTHER_KEY}"}
    s = Stack(tmp_path_factory.mktemp("e2e-secure"), settings, redis_tls=True)
    try:
        s.start()
        yield s
    finally:
        s.stop()


def png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_redis_speaks_only_tls_and_only_to_its_users(stack):
    assert stack.redis.service_url.startswith("rediss://")
    assert stack.env["REDIS_URL"] == stack.redis.service_url and "@" not in stack.env["REDIS_URL"]
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(stack.redis.service_url.replace("rediss", "redis"), socket_timeout=2).ping()
    with pytest.raises(redis.RedisError):  # TLS, but no credentials
        redis.Redis.from_url(stack.redis.service_url, ssl_ca_certs=str(stack.redis.prepared.tls.ca_cert)).ping()


def test_a_key_holder_is_answered_through_apache_over_tls_redis(stack):
    response = requests.post(f"{stack.url}/predict", files={"image": ("x.png", png())},
                             headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["success"] is True and len(response.json()["predictions"]) == 5
    ready = requests.get(f"{stack.url}/ready", headers={"Authorization": f"Bearer {OTHER_KEY}"}, timeout=5).json()
    assert ready["ready"] is True and [s["name"] for s in ready["model_servers"]] == ["model_server"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": f"Bearer {KEY[:-1]}"}, {"Authorization": f"Basic {KEY}"}])
@pytest.mark.parametrize("path", ["/predict", "/ready", "/metrics", "/"])
def test_no_key_or_a_wrong_key_is_a_401_through_apache(stack, headers, path):
    method = requests.post if path == "/predict" else requests.get
    response = method(f"{stack.url}{path}", headers=headers, timeout=10,
                      **({"files": {"image": ("x.png", png())}} if path == "/predict" else {}))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["success"] is False


def test_liveness_needs_no_key(stack):
    assert requests.get(f"{stack.url}/health", timeout=5).status_code == 200


def test_apache_tells_no_version_and_answers_carry_security_headers(stack):
    response = requests.get(f"{stack.url}/health", timeout=5)
    assert response.headers["Server"] == "Apache"  # ServerTokens Prod: no version, no OS, no modules
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    # A page Apache itself answers (a malformed request never reaches the app) has no signature either.
    with socket.create_connection(("127.0.0.1", stack.port), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nthis line is no header\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    text = answer.decode(errors="replace")
    assert text.startswith("HTTP/1.1 400"), text[:200]
    assert "Server: Apache\r\n" in text
    assert "Apache/" not in text and "Server at" not in text and "Debian" not in text
    # TRACE would echo the request back, the client's Authorization header included.
    trace = requests.request("TRACE", f"{stack.url}/health", headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
    assert trace.status_code == 405 and KEY not in trace.text


def test_the_key_name_is_counted_and_no_secret_shows_anywhere(stack):
    for _ in range(2):
        requests.get(f"{stack.url}/ready", headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
    metrics = requests.get(f"{stack.url}/metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=5).text
    assert 'kras_http_requests_by_client_total{client="tester"}' in metrics
    passwords = [stack.redis.prepared.password(role) for role in redis_users.ROLES]
    secrets = [*passwords, KEY, OTHER_KEY]
    # Whole logs: each process's output (Apache logs to it) and any log file under Apache's server root.
    logs = "".join(stack.log(name) for name in stack.processes)
    logs += "".join(path.read_text(errors="replace") for path in stack.server_root.rglob("*log*") if path.is_file())
    assert "client=tester" in logs  # the access log names the key
    assert not [s for s in secrets if s in logs or s in metrics]
    # Nor on any process's command line (what `ps` shows every user).
    for pid_dir in Path("/proc").iterdir():
        if pid_dir.name.isdigit():
            try:
                cmdline = (pid_dir / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            assert not [s for s in passwords if s in cmdline], cmdline
