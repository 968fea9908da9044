"""run.sh stops in order and loses nothing: interrupted mid-flood, every accepted request is answered.

run.sh is started for real (its own Redis on a free port, the model server, Apache through
mod_wsgi-express), flooded by concurrent clients, and sent SIGINT (Ctrl-C) or SIGTERM while
requests are in flight. A request the service never accepted (connection refused once Apache
stopped listening, or reset while it sat unread in the listen backlog: after the signal, with
nothing listening any more) is fine; any other
outcome than a complete, correct 200 is a request lost at shutdown.
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import requests

from tests.support.harness import PROJECT, free_port, wait_until
from tests.support import checked_flood

pytestmark = pytest.mark.faults

CLIENTS = 24


def classify(port: int, body: bytes, content_type: str) -> tuple[str, object]:
    """One POST /predict on a fresh connection: ("ok", json) or why it did not succeed."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        try:
            connection.connect()
        except ConnectionRefusedError:
            return "refused", None
        try:
            connection.request("POST", "/predict", body=body, headers={"Content-Type": content_type})
            response = connection.getresponse()
            data = response.read()
        except http.client.RemoteDisconnected:
            # Apache took the connection and closed it without an answer: lost.
            return "closed without answer", None
        except (ConnectionResetError, BrokenPipeError):
            # Reset while unread in the backlog of a listener that closed: never accepted.
            return "reset", None
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            return f"error {type(exc).__name__}", None
        if response.status != 200:
            return f"status {response.status}", data[:200]
        return "ok", json.loads(data)
    finally:
        connection.close()


def listening(port: int) -> bool:
    """Whether something still accepts connections on `port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def kill_processes_with(variable: str) -> list[int]:
    """SIGKILL every process whose environment holds `variable` (NAME=value); their pids."""
    needle = variable.encode()
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            os.kill(int(entry.name), signal.SIGKILL)
            killed.append(int(entry.name))
        except (OSError, ValueError):  # gone meanwhile, or not ours to read
            continue
    return killed


def multipart(image: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_run_sh_answers_every_accepted_request_when_stopped_mid_flood(signum, slow_model_files, tmp_path):
    port, redis_port = free_port(), free_port()
    server_root = Path(tempfile.mkdtemp(prefix="kras-shutdown-"))
    os.chmod(server_root, 0o755)  # Apache's daemons (www-data when run as root) reach their socket here
    env = {**os.environ, **slow_model_files, "PORT": str(port), "HOST": "127.0.0.1",
           "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "KEY_PREFIX": f"shutdown-{uuid.uuid4().hex[:6]}",
           "APACHE_SERVER_ROOT": str(server_root / "root"), "MODEL_CACHE_DIR": str(tmp_path / "cache"),
           "BATCH_SIZE": "8", "WSGI_PROCESSES": "2", "WSGI_THREADS": "16", "REQUEST_TIMEOUT": "20",
           "HEARTBEAT_INTERVAL": "0.5", "TF_CPP_MIN_LOG_LEVEL": "2"}
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log:
        # SIGINT back to its default for run.sh: a test run started in the background by a
        # non-interactive shell inherits SIGINT ignored, and bash cannot trap a signal ignored
        # when it started (a fresh-clone run launched with `&` failed this way).
        run = subprocess.Popen([str(PROJECT / "run.sh")], cwd=PROJECT, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        def ready() -> bool:
            assert run.poll() is None, f"run.sh exited early: {log_path.read_text()[-3000:]}"
            try:
                return requests.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(ready, 180, f"run.sh to be ready (log {log_path})")

        # Noise images came within 2e-5 of each other under this model: a swap would pass.
        images = checked_flood.distinct_images(8)
        expected = checked_flood.expected_answers(slow_model_files, images)
        bodies = [multipart(image) for image in images]

        outcomes: list[tuple[str, float, float]] = []  # (outcome, started, finished)
        wrong: list[str] = []
        lock = threading.Lock()
        stop_sending = threading.Event()
        signalled_at: list[float] = []

        def client(n: int) -> None:
            i = n
            while not stop_sending.is_set():
                started = time.monotonic()
                outcome, body = classify(port, *bodies[i % len(bodies)])
                finished = time.monotonic()
                if outcome == "reset" and (not signalled_at or listening(port)):
                    # Only a listener that has closed drops connections from its backlog: a reset
                    # before the stop, or while Apache still listens, is a request it dropped.
                    outcome = "reset while Apache listened"
                if outcome == "ok":
                    got = {p["label"]: p["probability"] for p in body["predictions"]}
                    if got != pytest.approx(expected[i % len(bodies)], abs=1e-4):
                        wrong.append(f"image {i % len(bodies)}: {got} != {expected[i % len(bodies)]}")
                with lock:
                    outcomes.append((outcome, started, finished))
                if outcome in ("refused", "reset"):
                    return  # Apache has stopped listening: nothing more will be accepted
                i += CLIENTS

        threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        # Interrupt once the flood is well under way, with batches queued and in flight.
        wait_until(lambda: sum(o == "ok" for o, _, _ in outcomes) >= 3 * CLIENTS, 120, "the flood to get going")
        signalled = time.monotonic()
        signalled_at.append(signalled)
        run.send_signal(signum)
        code = run.wait(120)
        stop_sending.set()
        for thread in threads:
            thread.join(90)
        assert not any(thread.is_alive() for thread in threads), "a client still waits for an answer"
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(10)
        # run.sh starts each component in a session of its own (setsid), so killing its group
        # leaves them running; a failed run must not leave a Redis, a model server and an
        # Apache behind for the rest of the suite. They carry this run's unique KEY_PREFIX.
        kill_processes_with(f"KEY_PREFIX={env['KEY_PREFIX']}")
    log_text = log_path.read_text(errors="replace")
    counts = Counter(outcome for outcome, _, _ in outcomes)
    in_flight_answered = sum(1 for o, s, f in outcomes if o == "ok" and s < signalled < f)
    print(f"\n[{signal.Signals(signum).name}] {dict(counts)}; in flight at the signal and answered: "
          f"{in_flight_answered}; run.sh exit {code} after {time.monotonic() - signalled:.1f} s")

    assert code == 128 + signum, log_text[-3000:]
    assert set(counts) <= {"ok", "refused", "reset"}, (dict(counts), log_text[-3000:])
    assert not wrong, wrong[:3]
    # The stop really came mid-flood: requests were in flight at the signal, and were answered.
    assert in_flight_answered >= 1, dict(counts)
    # In order: Apache (graceful), then the model server, then the Redis run.sh started.
    steps = [log_text.find(s) for s in ("stopping Apache gracefully", "stopping the model server",
                                        "stopping redis-server", "[run] stopped")]
    assert -1 not in steps and steps == sorted(steps), log_text[-3000:]
    assert "Redis unreachable" not in log_text and "unreachable" not in log_text.split("stopping Apache")[1]
    assert "did not stop within" not in log_text
    # Nothing is left listening, and Redis saved its data on the way out.
    for p in (port, redis_port):
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", p), timeout=2):
            pass
    dump = PROJECT / ".run" / "redis" / "dump.rdb"
    assert dump.exists() and dump.stat().st_mtime >= time.time() - (time.monotonic() - signalled) - 1
