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

The failover test spreads Redis too: a primary (10.203.0.2), its replica (10.203.0.6) and three
Sentinels (10.203.0.11-13), every one on a host of its own and all speaking only TLS (replication
and the Sentinels included); the tiers know only the Sentinels. The primary is SIGKILLed under a
flood from the client host (tests/support/failover_flood.py) and the figures are printed.

Needs root and iproute2 (skipped otherwise, with the reason); nothing is installed here.
Run alone with `./test.sh -m multihost`.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import tempfile
import time
import shutil
from collections import Counter
from pathlib import Path

import pytest

from keras_rest_api.queue import redis_users
from tests.support.failover_flood import ANSWER_WITHIN
from tests.support.harness import PROJECT, sentinel_conf, wait_until
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

# Prepended to the client-host scripts that wait: call `check` every 0.2 s until it returns
# (True, what to print), or `seconds` pass; exit 1 printing what it last said or raised of `errors`.
POLL = """
import sys, time

def until(check, seconds, errors):
    deadline, last = time.monotonic() + seconds, "nothing yet"
    while time.monotonic() < deadline:
        try:
            done, last = check()
            if done:
                print(last)
                sys.exit(0)
        except errors as exc:  # the service is not up yet: say so if it never comes
            last = repr(exc)
        time.sleep(0.2)
    print(last)
    sys.exit(1)
"""

# Run on the client host: wait (bounded) until /ready lists every named model server.
WAIT_READY = POLL + """
import requests
url, count = sys.argv[1], len(sys.argv[2].split(","))

def ready():
    answer = requests.get(url, timeout=2)
    ok = answer.status_code == 200 and answer.json()["model_servers_alive"] >= count
    return ok, answer.text if ok else f"{answer.status_code} {answer.text}"

until(ready, float(sys.argv[3]), requests.RequestException)
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


# The failover layout: every Redis and every Sentinel on a host of its own.
PRIMARY, REPLICA, SENTINEL_PORT, MASTER = f"{SUBNET}.2", f"{SUBNET}.6", 26379, "kras"
SENTINEL_HOSTS = {f"sentinel{n}": f"{SUBNET}.{11 + n}" for n in range(3)}
FLOOD_SECONDS, KILL_AFTER = 18.0, 5.0

# Run on the client host, as admin, through the Sentinels (TLS): wait (bounded) until every
# Sentinel sees the other two and the replica, and the replica is caught up.
SENTINELS_READY = POLL + """
import redis
from redis.sentinel import Sentinel
from keras_rest_api import settings
from keras_rest_api.queue.redis_users import client_options, parse_sentinels, sentinel_options
config = settings.load()
tls = {k: v for k, v in client_options(config).items() if k.startswith("ssl_")}

def quorum_and_replica():
    states = [redis.Redis(host=h, port=p, ssl=True, socket_timeout=2, **tls, **sentinel_options(config))
              .sentinel_master(config["REDIS_SENTINEL_MASTER"]) for h, p in parse_sentinels(config["REDIS_SENTINELS"])]
    seen = [(s["ip"], s["port"], s["num-other-sentinels"], s["num-slaves"]) for s in states]
    if not all(s["num-other-sentinels"] >= 2 and s["num-slaves"] >= 1 for s in states):
        return False, seen
    sentinel = Sentinel(parse_sentinels(config["REDIS_SENTINELS"]), sentinel_kwargs={"ssl": True, **tls, **sentinel_options(config)})
    replica = sentinel.slave_for(config["REDIS_SENTINEL_MASTER"], ssl=True, **client_options(config))
    return replica.info("replication").get("master_link_status") == "up", seen

until(quorum_and_replica, float(sys.argv[1]), redis.RedisError)
"""

# Run on the client host, as admin: how many answers each job's result list holds on the
# primary the Sentinels report now, and how many of those results the old primary (argv[1],
# rejoined as a replica) holds once caught up, waiting for that at most 10 s (job ids on stdin).
ANSWER_COUNTS = """
import json, sys, time, redis
from keras_rest_api import settings
from keras_rest_api.queue.jobs import queue_from_settings
from keras_rest_api.queue.redis_users import client_options
config, jobs = settings.load(), json.load(sys.stdin)
queue = queue_from_settings(config, 10.0)
keys = [queue.keys.result(job) for job in jobs]
counts = [queue.redis.llen(key) for key in keys]
host, port = sys.argv[1].split(":")
old = redis.Redis(host=host, port=int(port), ssl=True, socket_timeout=5, **client_options(config))
deadline, copied = time.monotonic() + 10, 0
while time.monotonic() < deadline and copied < len(keys):
    try:
        copied = old.exists(*keys) if keys else 0
    except redis.RedisError:  # reconfigured by the Sentinels: its clients are dropped meanwhile
        pass
    time.sleep(0.2)
print(json.dumps({"counts": counts, "primary": "%s:%s" % queue.redis.connection_pool.get_master_address(),
                  "old_primary_role": old.info("replication")["role"], "on_old_primary": copied}))
"""


# Run on the client host: a Sentinel answers PING over TLS with its password, and refuses a
# client without the password and one without TLS.
SENTINEL_REFUSES = """
import os, sys, redis
host, port, ca = sys.argv[1], int(sys.argv[2]), os.environ["REDIS_TLS_CA_FILE"]
password = open(os.environ["REDIS_SENTINEL_PASSWORD_FILE"]).read().strip()
for what, options in (("without its password", {"ssl": True, "ssl_ca_certs": ca}), ("without TLS", {"password": password})):
    try:
        redis.Redis(host=host, port=port, socket_timeout=5, **options).ping()
    except redis.RedisError as exc:
        print(what, "refused:", type(exc).__name__)
        continue
    sys.exit(f"a Sentinel answered a client {what}")
assert redis.Redis(host=host, port=port, ssl=True, ssl_ca_certs=ca, password=password, socket_timeout=5).ping()
"""


def stop_tiers(net: Network) -> None:
    """SIGTERM to Apache and the model servers, and wait (bounded) until they have stopped, while
    Redis and the Sentinels still answer: a model server stopping without them waits out its
    reconnect attempts."""
    tiers = {name: process for name, process in net.processes.items() if name == "apache" or name in SERVERS}
    for process in tiers.values():
        os.killpg(process.pid, signal.SIGTERM)
    for process in tiers.values():
        process.wait(30)


def spawn_sentinels(net: Network, secured: redis_users.Prepared, workdir: Path, env: dict[str, str]) -> Path:
    """Three redis-sentinel processes, each on a host of its own at SENTINEL_PORT, speaking only
    TLS, monitoring PRIMARY as MASTER with quorum 2; returns their password file."""
    executable = shutil.which("redis-sentinel")
    assert executable, "redis-sentinel is not installed; run ./test.sh, which installs it"
    password_file = secured.directory / "sentinel.password"
    password_file.write_text(secrets.token_urlsafe(24) + "\n")
    os.chmod(password_file, 0o644)  # Apache's daemons (www-data) read it; the folder keeps others out
    for name, address in SENTINEL_HOSTS.items():
        directory = workdir / name  # a Sentinel rewrites its configuration file: one folder each
        directory.mkdir()
        conf = directory / "sentinel.conf"
        conf.write_text(sentinel_conf(port=SENTINEL_PORT, bind=address, directory=directory, master=MASTER,
                                      primary=(PRIMARY, REDIS_PORT), password=password_file.read_text().strip(),
                                      admin_password=secured.password(redis_users.ADMIN), down_after_ms=1000,
                                      tls=secured.tls))
        os.chmod(conf, 0o600)
        net.add_host(name, address).spawn(name, [executable, str(conf)], env, workdir)
    return password_file


@pytest.mark.faults
def test_primary_sigkill_across_hosts_fails_over_and_keeps_every_accepted_job(tmp_path, tiny_model_files):
    """A primary, a replica and three Sentinels on hosts of their own, all TLS; the tiers know
    only the Sentinels. The primary's host loses its redis-server (SIGKILL) under a flood from
    the client host: the Sentinels promote the replica, every synchronous request is answered
    200 (its own image's answer) or 503, every asynchronous job answered 202 is answered 200,
    once, and the old primary, restarted, rejoins as a replica holding all their results."""
    redis_server = shutil.which("redis-server")
    assert redis_server, "redis-server is not installed; run ./test.sh, which installs it"
    settings = {
        **tiny_model_files, "KEY_PREFIX": PREFIX, "QUEUE_NAME": "image_queue", "BATCH_SIZE": "8",
        "QUEUE_BLOCK_MS": "200", "CLAIM_IDLE_MS": "1000", "HEARTBEAT_INTERVAL": "0.5", "HEARTBEAT_TTL": "3",
        "REQUEST_TIMEOUT": "20", "RESULT_TTL": "120", "WSGI_PROCESSES": "2", "WSGI_THREADS": "16",
        "MIN_REPLICAS": "1", "MIN_REPLICAS_TIMEOUT_MS": "500", "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    env = {**os.environ, **settings}
    server_root = Path(tempfile.mkdtemp(prefix="kras-multihost-apache-"))
    os.chmod(server_root, 0o755)
    sentinel_addresses = list(SENTINEL_HOSTS.values())
    common = dict(prefix=PREFIX, queue_name="image_queue", port=REDIS_PORT, tls=True)
    for name in ("primary", "replica"):
        (tmp_path / name).mkdir()
    # One secrets folder (users, passwords, CA) for both servers; the certificate written last
    # names every Redis and Sentinel host, and both servers start with it.
    redis_users.prepare(server_root / "redis-secrets", data_dir=tmp_path / "primary", bind=[PRIMARY],
                        replication=True, conf_name="primary.conf", **common)
    secured = redis_users.prepare(server_root / "redis-secrets", data_dir=tmp_path / "replica", bind=[REPLICA],
                                  tls_hosts=[PRIMARY, *sentinel_addresses], replica_of=(PRIMARY, REDIS_PORT),
                                  conf_name="replica.conf", **common)
    as_role = {role: secured.client_settings(role) for role in redis_users.ROLES}
    try:
        with Network() as net:
            primary = net.add_host("redis", PRIMARY).spawn("redis", [redis_server, str(secured.directory / "primary.conf")],
                                                           env, tmp_path)
            net.add_host("replica", REPLICA).spawn("replica", [redis_server, str(secured.directory / "replica.conf")],
                                                   env, tmp_path)
            web = net.add_host("web", f"{SUBNET}.3")
            gpus = [net.add_host(name, f"{SUBNET}.{4 + n}") for n, name in enumerate(SERVERS)]
            client = net.add_host("client", f"{SUBNET}.9")
            users = [PYTHON, "-m", "keras_rest_api.queue.redis_users"]
            loaded = client.run(["sh", "-c", f"{' '.join(users)} probe --wait 20 && {' '.join(users)} functions"],
                                {**env, **as_role["admin"], "REDIS_URL": f"rediss://{PRIMARY}:{REDIS_PORT}/0"},
                                timeout=60)
            assert loaded.returncode == 0, loaded.stdout + loaded.stderr + net.logs_tail()
            password_file = spawn_sentinels(net, secured, tmp_path, env)

            # What the tiers know of Redis: the Sentinels (over TLS), never the primary's address.
            found_by_sentinels = {"REDIS_URL": "rediss://sentinels/0", "REDIS_SENTINEL_MASTER": MASTER,
                                  "REDIS_SENTINELS": ",".join(f"{a}:{SENTINEL_PORT}" for a in sentinel_addresses),
                                  "REDIS_SENTINEL_PASSWORD_FILE": str(password_file)}
            tier = {role: {**env, **as_role[role], **found_by_sentinels} for role in redis_users.ROLES}
            assert not [value for role in (redis_users.WEB, redis_users.MODEL_SERVER) for value in tier[role].values()
                        if re.search(re.escape(PRIMARY) + "(?![0-9])", value)]
            ready = client.run([PYTHON, "-c", SENTINELS_READY, "30"], tier["admin"], timeout=60)
            assert ready.returncode == 0, ready.stdout + ready.stderr + net.logs_tail()
            refused = client.run([PYTHON, "-c", SENTINEL_REFUSES, sentinel_addresses[0], str(SENTINEL_PORT)],
                                 tier["web"], timeout=30)
            assert refused.returncode == 0, refused.stdout + refused.stderr

            for host in gpus:
                host.spawn(host.name, [PYTHON, "run_model_server.py"],
                           {**tier["model_server"], "MODEL_SERVER_NAME": host.name}, tmp_path)
            web.spawn("apache", [str(PROJECT / "apache" / "serve.sh")],
                      {**tier["web"], "HOST": web.address, "PORT": str(WEB_PORT),
                       "APACHE_SERVER_ROOT": str(server_root / "root")}, tmp_path)
            base = f"http://{web.address}:{WEB_PORT}"
            waiter = subprocess.Popen(
                client.command([PYTHON, "-c", WAIT_READY, f"{base}/ready", ",".join(SERVERS), "90"]),
                cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            wait_for(waiter, net, 90, f"{base}/ready to count {SERVERS}")

            started, summary_path = tmp_path / "flood.started", tmp_path / "flood.json"
            flood = subprocess.Popen(
                client.command([PYTHON, "-m", "tests.support.failover_flood", base, "--clients", "6",
                                "--seconds", str(FLOOD_SECONDS), "--started", str(started), "--json",
                                str(summary_path), "--watch-sentinels"]),
                cwd=PROJECT, env=tier["admin"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            wait_until(lambda: started.exists() or flood.poll() is not None, 60, "the flood to start")
            assert started.exists(), flood.stdout.read() if flood.stdout else ""
            time.sleep(KILL_AFTER - 1.0)
            # For a second before the kill nothing is answered, so synchronous clients are waiting
            # on their jobs when the primary dies (what the web tier's re-queueing is for).
            for name in SERVERS:
                os.killpg(net.processes[name].pid, signal.SIGSTOP)
            time.sleep(1.0)
            del net.processes["redis"]  # its death is the point: no longer a service that must stay up
            killed_at = time.monotonic()
            primary.kill()
            primary.wait(10)
            for name in SERVERS:
                os.killpg(net.processes[name].pid, signal.SIGCONT)
            # Once the replica is promoted the old primary comes back from its own (stale)
            # append-only file: the Sentinels make it a replica of the new primary, which it copies.
            wait_until(lambda: any("+switch-master" in net.log(name, 10**6) for name in SENTINEL_HOSTS), 30,
                       "the Sentinels' failover")
            net.hosts["redis"].spawn("redis", [redis_server, str(secured.directory / "primary.conf")], env, tmp_path)
            wait_for(flood, net, FLOOD_SECONDS + ANSWER_WITHIN + 30, "the flood and its jobs' answers")
            result = json.loads(summary_path.read_text())

            counted = subprocess.run(client.command([PYTHON, "-c", ANSWER_COUNTS, f"{PRIMARY}:{REDIS_PORT}"]),
                                     cwd=PROJECT, env=tier["admin"],
                                     input=json.dumps(result["accepted"]), capture_output=True, text=True, timeout=60)
            assert counted.returncode == 0, counted.stdout + counted.stderr
            counts = json.loads(counted.stdout)
            apache_log = net.logs["apache"].read_text(errors="replace")
            tag = net.tag
            stop_tiers(net)

        sync = [(sent, answered, outcome) for sent, answered, outcome in result["sync"]]
        statuses = Counter(outcome for _, _, outcome in sync)
        carried_over = Counter(outcome for sent, answered, outcome in sync
                               if sent < killed_at and answered > killed_at + 1.0)
        first_ok = min((answered for sent, answered, outcome in sync if sent > killed_at and outcome == "200"),
                       default=float("inf"))
        promoted = [at for at, address in result["primary_changes"] if at > killed_at and address == f"{REPLICA}:{REDIS_PORT}"]
        lost = [job for job in result["accepted"] if result["answers"].get(job) != 200]
        twice = sum(1 for count in counts["counts"] if count > 1)
        print(f"\n[failover multihost] sentinel failover {promoted[0] - killed_at if promoted else float('nan'):.1f} s, "
              f"first 200 after the kill {first_ok - killed_at:.1f} s; sync answers {dict(statuses)}, of those "
              f"waiting through the failover {dict(carried_over)}; wrong answers {result['wrong_answers']}; "
              f"async {result['async_statuses']}, accepted {len(result['accepted'])}, lost {len(lost)}, "
              f"answered twice {twice}; primary now {counts['primary']}, old primary rejoined as "
              f"{counts['old_primary_role']} holding {counts['on_old_primary']} of their results")
        assert set(statuses) <= {"200", "503"}, statuses
        assert result["wrong_answers"] == 0
        assert set(result["async_statuses"]) <= {"202", "503"}, result["async_statuses"]
        assert result["accepted"] and lost == [], lost
        assert twice == 0, counts["counts"]
        # The Sentinels promoted the replica, and the tiers found it through them.
        assert promoted and counts["primary"] == f"{REPLICA}:{REDIS_PORT}", (result["primary_changes"], counts)
        assert counts["old_primary_role"] == "slave" and counts["on_old_primary"] == len(result["accepted"]), counts
        assert carried_over["200"] > 0 and "queueing the job again" in apache_log
        assert first_ok - killed_at < 15
        assert [name for name in namespaces() if name.startswith(tag)] == []
    except NetnsUnavailable as exc:
        pytest.skip(str(exc))
    finally:
        shutil.rmtree(server_root, ignore_errors=True)
