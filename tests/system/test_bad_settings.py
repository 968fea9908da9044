"""A bad setting stops the system before anything starts.

`API_KEYS='plainkey' ./run.sh` used to start Redis, the model server and Apache, then answer
500 to every request (and print the same traceback for each) forever. Now run.sh, the model
server and the WSGI app each refuse to start, naming the setting and what it expects.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import pytest

from tests.support.harness import PROJECT, VENV_PYTHON, free_port

pytestmark = pytest.mark.e2e


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_run_sh_exits_on_a_bad_api_key_setting_before_starting_redis(tmp_path):
    port, redis_port = free_port(), free_port()
    # EXTRAS as ./test.sh installed them, so run.sh's bootstrap finds everything in place.
    env = {**os.environ, "API_KEYS": "plainkey", "PORT": str(port), "HOST": "127.0.0.1",
           "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "EXTRAS": os.environ.get("EXTRAS", "test,bench,jax,torch"),
           "APACHE_SERVER_ROOT": str(tmp_path / "apache")}
    started = time.monotonic()
    # The timeout is a guard against the old behaviour (serving 500s forever), not a speed check.
    run = subprocess.run([str(PROJECT / "run.sh")], cwd=PROJECT, env=env, capture_output=True, text=True,
                         timeout=600)
    took = time.monotonic() - started
    assert run.returncode == 2, run.stderr[-2000:]
    assert "API_KEYS: entry 1 is not `name:key`" in run.stderr
    assert "not starting anything" in run.stderr
    assert "plainkey" not in run.stderr + run.stdout  # a key (even a malformed one) is never printed
    assert "starting redis-server" not in run.stderr and "starting the model server" not in run.stderr
    assert not listening(redis_port) and not listening(port)
    assert not (tmp_path / "apache").exists()
    print(f"run.sh exited {run.returncode} after {took:.2f} s")


def test_the_model_server_exits_on_a_bad_setting():
    env = {**os.environ, "API_KEYS": "plainkey", "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    run = subprocess.run([str(VENV_PYTHON), "run_model_server.py"], cwd=PROJECT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 2, run.stderr[-2000:]
    assert "cannot start: API_KEYS: entry 1 is not `name:key`" in run.stderr


def test_apache_does_not_start_a_web_tier_that_cannot_read_its_api_keys_file(tmp_path):
    # Readable by root only: run as root, serve.sh must find that Apache's daemons (www-data)
    # cannot read it; not as root, the file is simply missing. Before, Apache started and
    # answered 500 to every request, with a traceback in the log for each.
    keys = tmp_path / "api_keys"
    if os.geteuid() == 0:
        keys.write_text("ops:0123456789abcdef0123456789\n")
        os.chmod(keys, 0o600)
    port = free_port()
    env = {**os.environ, "API_KEYS_FILE": str(keys), "PORT": str(port), "HOST": "127.0.0.1",
           "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "APACHE_SERVER_ROOT": str(tmp_path / "apache")}
    serve = subprocess.Popen([str(PROJECT / "apache" / "serve.sh")], cwd=PROJECT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = serve.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(serve.pid, signal.SIGTERM)  # Apache started after all: stop all of it
        serve.communicate(timeout=30)
        pytest.fail(f"Apache started with an API_KEYS_FILE its daemons cannot read (listening: {listening(port)})")
    assert serve.returncode == 2, stderr[-2000:]
    assert f"web tier: cannot start: API_KEYS_FILE '{keys}' cannot be read" in stderr
    assert "readable by the web tier's user" in stderr
    assert "0123456789abcdef" not in stderr + stdout
    assert not listening(port)
