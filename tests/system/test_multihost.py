"""The service spread over several machines, made as network namespaces on this one.

Five "hosts", each a network namespace with one address on a private bridge (tests/support/netns.py):

    10.203.0.2  redis     redis-server
    10.203.0.3  web       Apache + mod_wsgi (apache/serve.sh), HOST=10.203.0.3
    10.203.0.4  gpu0      run_model_server.py, MODEL_SERVER_NAME=gpu0
    10.203.0.5  gpu1      run_model_server.py, MODEL_SERVER_NAME=gpu1
    10.203.0.9  client    stress_test.py

Every tier is pointed at the others through settings only (REDIS_URL, HOST, PORT,
MODEL_SERVER_NAME, REDIS_USERNAME, REDIS_PASSWORD_FILE, REDIS_TLS_CA_FILE), exactly as on real
machines; no host can reach another's loopback. Redis keeps protected mode on and speaks only
TLS, to its ACL users (web, model_server; the client host probes as admin). A flood from the
client must be answered in full, by both model servers, and /ready must count both.

Needs root and iproute2 (skipped otherwise, with the reason); nothing is installed here.
Run alone with `./test.sh -m multihost`.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import shutil
from pathlib import Path

import pytest

from keras_rest_api.queue import redis_users
from tests.support.harness import PROJECT
from tests.support.netns import Network, NetnsUnavailable, namespaces, unavailable_reason

UNAVAILABLE = unavailable_reason()  # not root, or no iproute2: skipped, saying which
pytestmark = [pytest.mark.multihost, pytest.mark.e2e,
              pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")]

PYTHON = str(PROJECT / ".venv" / "bin" / "python")
SUBNET = "10.203.0"
REDIS_PORT, WEB_PORT = 6379, 8000
PREFIX = "multihost"
REQUESTS = 100
SERVERS = ("gpu0", "gpu1")

# Run on the client host: wait (bounded) until /ready lists every named model server.
WAIT_READY = """
import sys, time, requests
url, count, deadline = sys.argv[1], len(sys.argv[2].split(",")), time.monotonic() + float(sys.argv[3])
last = "nothing yet"
while time.monotonic() < deadline:
    try:
        answer = requests.get(url, timeout=2)
        last = f"{answer.status_code} {answer.text}"
        if answer.status_code == 200 and answer.json()["model_servers_alive"] >= count:
            print(answer.text)
            sys.exit(0)
    except requests.RequestException as exc:
        last = repr(exc)
    time.sleep(0.2)
print(last)
sys.exit(1)
"""

# Run on the client host: what each live model server published in its heartbeat.
LIVE_SERVERS = """
import json, sys
from keras_rest_api import settings
from keras_rest_api.queue.jobs import queue_from_settings
queue = queue_from_settings({**settings.load(), "REDIS_URL": sys.argv[1], "KEY_PREFIX": sys.argv[2]}, 5.0)
print(json.dumps({s.name: s.batch_sizes for s in queue.live_servers(float(sys.argv[3]))}))
"""


# Run on the client host: a connection without credentials (TLS verified) must get nothing.
ANONYMOUS = """
import os, sys, redis
try:
    redis.Redis.from_url(sys.argv[1], ssl_ca_certs=os.environ["REDIS_TLS_CA_FILE"], socket_timeout=5).get("x")
except redis.RedisError as exc:
    print("refused:", type(exc).__name__)
    sys.exit(0)
sys.exit("an anonymous client was served")
"""


def wait_for(process: subprocess.Popen, net: Network, timeout: float, what: str) -> str:
    """Wait (bounded) for a probe process to finish, failing early if a service process died."""
    deadline = time.monotonic() + timeout + 5
    while process.poll() is None:
        for name, service in net.processes.items():
            if service.poll() is not None:
                process.kill()
                process.wait(5)
                raise AssertionError(f"{name} exited ({service.returncode}) while waiting for {what}\n"
                                     f"{net.logs_tail()}")
        if time.monotonic() > deadline:
            process.kill()
            process.wait(5)
            raise AssertionError(f"timed out waiting for {what}\n{net.logs_tail()}")
        time.sleep(0.1)
    output = process.stdout.read() if process.stdout else ""
    assert process.returncode == 0, f"{what}: {output}\n{net.logs_tail()}"
    return output


def test_flood_across_hosts_is_answered_by_both_model_servers(tmp_path, slow_model_files, image_file):
    redis_server = shutil.which("redis-server")
    assert redis_server, "redis-server is not installed; run ./test.sh, which installs it"

    redis_url = f"rediss://{SUBNET}.2:{REDIS_PORT}/0"
    settings = {
        **slow_model_files, "REDIS_URL": redis_url, "KEY_PREFIX": PREFIX, "QUEUE_NAME": "image_queue",
        "BATCH_SIZE": "8", "BATCH_WAIT_MS": "0", "QUEUE_BLOCK_MS": "200", "HEARTBEAT_INTERVAL": "0.5",
        "HEARTBEAT_TTL": "3", "REQUEST_TIMEOUT": "15", "RESULT_TTL": "10", "WSGI_PROCESSES": "2",
        "WSGI_THREADS": "16", "MAX_QUEUE_LENGTH": "2000", "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    env = {**os.environ, **settings}
    # Apache's daemons run as www-data: its server root and the web password must be reachable by that user.
    server_root = Path(tempfile.mkdtemp(prefix="kras-multihost-apache-"))
    os.chmod(server_root, 0o755)
    # ACL users, their passwords and a CA with Redis's certificate for its address (keras_rest_api/queue/redis_users.py).
    secured = redis_users.prepare(server_root / "redis-secrets", prefix=PREFIX, queue_name="image_queue",
                                     data_dir=tmp_path, port=REDIS_PORT, bind=[f"{SUBNET}.2"], tls=True)
    as_role = {role: secured.client_settings(role) for role in redis_users.ROLES}
    try:
        with Network() as net:
            redis_host = net.add_host("redis", f"{SUBNET}.2")
            web = net.add_host("web", f"{SUBNET}.3")
            gpus = [net.add_host(name, f"{SUBNET}.{4 + n}") for n, name in enumerate(SERVERS)]
            client = net.add_host("client", f"{SUBNET}.9")

            redis_host.spawn("redis", [redis_server, str(secured.conf)], env, tmp_path)
            # As run.sh: once Redis answers, the admin loads the function the web tier calls to queue a job.
            users = [PYTHON, "-m", "keras_rest_api.queue.redis_users"]
            loaded = client.run(["sh", "-c", f"{' '.join(users)} probe --wait 20 && {' '.join(users)} functions"],
                                {**env, **as_role["admin"]}, timeout=60)
            assert loaded.returncode == 0, loaded.stdout + loaded.stderr + net.logs_tail()
            for host in gpus:
                host.spawn(host.name, [PYTHON, "run_model_server.py"],
                           {**env, **as_role["model_server"], "MODEL_SERVER_NAME": host.name}, tmp_path)
            web.spawn("apache", [str(PROJECT / "apache" / "serve.sh")],
                      {**env, **as_role["web"], "HOST": web.address, "PORT": str(WEB_PORT),
                       "APACHE_SERVER_ROOT": str(server_root / "root")}, tmp_path)

            base = f"http://{web.address}:{WEB_PORT}"
            waiter = subprocess.Popen(
                client.command([PYTHON, "-c", WAIT_READY, f"{base}/ready", ",".join(SERVERS), "90"]),
                cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            ready = json.loads(wait_for(waiter, net, 90, f"{base}/ready to count {SERVERS}"))
            assert ready["ready"] is True and ready["model_servers_alive"] == len(SERVERS), ready
            # An open API tells anonymous callers no host names or pids.
            assert "model_servers" not in ready

            anonymous = client.run([PYTHON, "-c", ANONYMOUS, redis_url], {**env, **as_role["web"]}, timeout=30)
            assert anonymous.returncode == 0 and "refused" in anonymous.stdout, anonymous.stdout + anonymous.stderr

            summary_path = tmp_path / "flood.json"
            flood = client.run([PYTHON, "stress_test.py", f"{base}/predict", "--image", str(image_file),
                                "--requests", str(REQUESTS), "--interval", "0.02", "--timeout", "30",
                                "--json", str(summary_path), "--quiet"], env, timeout=90)
            assert summary_path.exists(), f"{flood.stdout}\n{flood.stderr}\n{net.logs_tail()}"
            summary = json.loads(summary_path.read_text())

            time.sleep(1.0)  # two heartbeats, so the published batch counts are current
            probe = client.run([PYTHON, "-c", LIVE_SERVERS, redis_url, PREFIX, "3"], {**env, **as_role["admin"]},
                               timeout=30)
            assert probe.returncode == 0, probe.stderr
            servers = json.loads(probe.stdout)
            images = {name: sum(int(size) * count for size, count in sizes.items()) for name, sizes in servers.items()}
            batches = {name: sum(sizes.values()) for name, sizes in servers.items()}
            print(f"\n[multihost] sent {summary['sent']}  ok {summary['ok']}  failures {summary['failures']}  "
                  f"images per server {images}  batches per server {batches}  "
                  f"p95 {summary['latency_ms']['p95'] if summary['latency_ms'] else None} ms")

            assert summary["sent"] == REQUESTS and summary["ok"] == REQUESTS, \
                f"{summary['failures']} {summary['failure_examples']}\n{net.logs_tail()}"
            assert set(servers) == set(SERVERS), servers
            # Both model servers took part, and every image was classified exactly once.
            assert all(images[name] > 0 for name in SERVERS), images
            assert sum(images.values()) == REQUESTS, images
            tag = net.tag
        # Teardown removed every namespace of this run (and so its bridge and veths).
        assert [name for name in namespaces() if name.startswith(tag)] == []
    except NetnsUnavailable as exc:
        pytest.skip(str(exc))
    finally:
        shutil.rmtree(server_root, ignore_errors=True)
