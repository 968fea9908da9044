"""Test harness: the whole system as real processes: Redis, model servers, Apache (mod_wsgi-express).

Used by the system tests and the benchmark (bench/benchmark.py imports it as
`tests.support.harness`), so both exercise exactly what `run.sh` runs.
"""
from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import redis
import requests

from keras_rest_api.queue import redis_users
from keras_rest_api.queue.functions import load_functions
from keras_rest_api.queue.jobs import JobQueue, queue_from_settings
from keras_rest_api.queue.records import Keys
from keras_rest_api.settings import load as load_settings

# The checkout: tests/support/harness.py is two folders below it.
PROJECT = Path(__file__).resolve().parents[2]
VENV_PYTHON = PROJECT / ".venv" / "bin" / "python"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tier_queue(config: Mapping[str, Any], model: str, version: str = "1") -> JobQueue:
    """`model`'s queue as the tier whose credentials `config` holds sees it (its own ACL user)."""
    connection = redis_users.connect(config["REDIS_URL"], 1.0, 10.0, **redis_users.client_options(config))
    return JobQueue(connection, Keys(config["KEY_PREFIX"], config["QUEUE_NAME"]), "servers").for_model(model, version)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait (bounded) for a process outside this one to reach a state; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class RedisServer:
    """A real redis-server process on a free loopback port, always with ACL users (see
    keras_rest_api/queue/redis_users.py): the default user is off, each tier has its own user,
    and with `tls` it speaks only TLS, with a CA made at start.

    `url` connects as the admin user, password included: for the tests' own inspection only,
    never handed to a tier. A tier gets `service_url` (no credentials in it) and `settings_for`
    its role. Secrets go to `secrets_dir`, which Apache's www-data must be able to reach.
    """

    def __init__(self, directory: Path, *, prefix: str = "kras", queue_name: str = "image_queue",
                 tls: bool = False, secrets_dir: Path | None = None, maxmemory: int | None = None,
                 appendfsync: str = "everysec", replica_of: "RedisServer | None" = None,
                 replication: bool = False) -> None:
        self.directory = directory
        self.secrets_dir = secrets_dir or directory / "redis-secrets"
        self.prefix, self.queue_name, self.tls, self.maxmemory = prefix, queue_name, tls, maxmemory
        self.appendfsync, self.replica_of, self.replication = appendfsync, replica_of, replication
        self.port = free_port()
        self.service_url = f"{'rediss' if tls else 'redis'}://127.0.0.1:{self.port}/0"
        self.prepared: redis_users.Prepared | None = None
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        password = self._prepare().password(redis_users.ADMIN)
        return self.service_url.replace("://", f"://{redis_users.ADMIN}:{password}@", 1)

    def settings_for(self, role: str) -> dict[str, str]:
        """The settings a process needs to connect as `role` (web, model_server or admin)."""
        return {"REDIS_URL": self.service_url, **self._prepare().client_settings(role)}

    def client(self, role: str = redis_users.ADMIN, **options: object) -> redis.Redis:
        """A client connected as `role`."""
        return redis.Redis.from_url(self.service_url, **redis_users.client_options(self.settings_for(role)),
                                    **options)

    def _prepare(self) -> redis_users.Prepared:
        if self.prepared is None:
            # Passwords are kept across restarts, so running tiers reconnect to a restarted Redis.
            self.directory.mkdir(parents=True, exist_ok=True)
            self.prepared = redis_users.prepare(
                self.secrets_dir, prefix=self.prefix, queue_name=self.queue_name, data_dir=self.directory,
                port=self.port, tls=self.tls, maxmemory=self.maxmemory, appendfsync=self.appendfsync,
                replication=self.replication,
                replica_of=("127.0.0.1", self.replica_of.port) if self.replica_of else None,
                conf_name=f"redis-{self.port}.conf")
        return self.prepared

    def start(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError("redis-server is not installed; run ./test.sh, which installs it")
        self.prepared = None
        # The configuration file carries the ACL file's path: no password on the command line.
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / "redis.log", "ab") as log:  # it outlives a restart, for post-mortems
            self.process = subprocess.Popen([executable, str(self._prepare().conf)], stdout=log,
                                            stderr=subprocess.STDOUT)
        client = self.client(socket_connect_timeout=0.2)
        wait_until(lambda: _pings(client), 10, f"redis-server on port {self.port}")
        if self.replica_of is not None:
            # A replica gets the function library from its primary, with the data.
            wait_until(lambda: _in_sync(client), 10, f"the replica on port {self.port} to catch up")
        else:
            load_functions(client)  # as run.sh does: the admin user loads what the tiers may FCALL

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to save anything beyond what its append-only file holds."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


class Sentinels:
    """Three real redis-sentinel processes on free loopback ports monitoring `primary` as `master`,
    with a password of their own (REDIS_SENTINEL_PASSWORD_FILE) and the admin user towards Redis.

    `down_after_ms` is how long the primary must be silent before they fail it over.
    """

    def __init__(self, directory: Path, primary: RedisServer, master: str = "kras", down_after_ms: int = 1000,
                 count: int = 3) -> None:
        self.directory, self.primary, self.master = directory, primary, master
        self.down_after_ms = down_after_ms
        self.ports = [free_port() for _ in range(count)]
        self.password_file = primary.secrets_dir / "sentinel.password"
        self.processes: list[subprocess.Popen] = []

    @property
    def addresses(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def settings(self) -> dict[str, str]:
        """What a tier adds to its Redis settings to find the primary through these Sentinels."""
        return {"REDIS_SENTINELS": self.addresses, "REDIS_SENTINEL_MASTER": self.master,
                "REDIS_SENTINEL_PASSWORD_FILE": str(self.password_file)}

    def client(self, index: int = 0) -> redis.Redis:
        return redis.Redis(port=self.ports[index], password=self.password_file.read_text().strip(),
                           socket_timeout=2, socket_connect_timeout=1)

    def start(self) -> None:
        executable = shutil.which("redis-sentinel")
        if executable is None:
            raise RuntimeError("redis-sentinel is not installed; run ./test.sh, which installs it")
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.password_file.exists():
            self.password_file.write_text(secrets.token_urlsafe(24) + "\n")
            os.chmod(self.password_file, 0o644)  # the web tier (www-data under root) reads it too
        password = self.password_file.read_text().strip()
        admin = self.primary.prepared.password(redis_users.ADMIN) if self.primary.prepared else \
            self.primary._prepare().password(redis_users.ADMIN)
        for port in self.ports:
            conf = self.directory / f"sentinel-{port}.conf"  # Sentinel rewrites it: its own file
            conf.write_text(sentinel_conf(port=port, bind="127.0.0.1", directory=self.directory, master=self.master,
                                          primary=("127.0.0.1", self.primary.port), password=password,
                                          admin_password=admin, down_after_ms=self.down_after_ms))
            os.chmod(conf, 0o600)
            self.processes.append(subprocess.Popen([executable, str(conf)], stdout=subprocess.DEVNULL))
        for index in range(len(self.ports)):
            client = self.client(index)
            wait_until(lambda: _knows_quorum(client, self.master), 20, f"Sentinel {index} to see its peers")

    def primary_port(self) -> int | None:
        """The port of the primary the first Sentinel reports."""
        try:
            address = self.client().sentinel_get_master_addr_by_name(self.master)
        except redis.RedisError:
            return None
        return int(address[1]) if address else None

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(10)
        self.processes = []


def sentinel_conf(*, port: int, bind: str, directory: Path, master: str, primary: tuple[str, int], password: str,
                  admin_password: str, down_after_ms: int, quorum: int = 2,
                  tls: redis_users.TlsFiles | None = None) -> str:
    """A redis-sentinel configuration: monitors `primary` as `master` (as the admin user), asks
    `password` of its clients and of the other Sentinels. With `tls` it speaks only TLS: to its
    clients (a client certificate optional, as for Redis), to the other Sentinels and to Redis
    (`tls-replication yes` is what makes a Sentinel use TLS towards both)."""
    lines = [f"bind {bind}", f"dir {directory}", "loglevel warning",
             f"requirepass {password}", f"sentinel sentinel-pass {password}",
             f"sentinel monitor {master} {primary[0]} {primary[1]} {quorum}",
             f"sentinel down-after-milliseconds {master} {down_after_ms}",
             f"sentinel failover-timeout {master} 10000",
             f"sentinel auth-user {master} {redis_users.ADMIN}",
             f"sentinel auth-pass {master} {admin_password}"]
    if tls is None:
        lines.append(f"port {port}")
    else:
        lines += ["port 0", f"tls-port {port}", f"tls-cert-file {tls.cert}", f"tls-key-file {tls.key}",
                  f"tls-ca-cert-file {tls.ca_cert}", "tls-auth-clients optional", "tls-replication yes"]
    return "\n".join(lines) + "\n"


def _knows_quorum(client: redis.Redis, master: str) -> bool:
    try:
        state = client.sentinel_master(master)
    except redis.RedisError:
        return False
    return int(state.get("num-other-sentinels", 0)) >= 2 and int(state.get("num-slaves", 0)) >= 1


def _in_sync(client: redis.Redis) -> bool:
    try:
        return client.info("replication").get("master_link_status") == "up"
    except redis.RedisError:
        return False


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class Stack:
    """Redis, model servers and Apache as processes, with logs in `workdir`; `stop` ends them all."""

    def __init__(self, workdir: Path, settings: Mapping[str, object], redis_tls: bool = False,
                 sentinel: bool = False) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **{k: str(v) for k, v in settings.items()},
                    "PORT": str(self.port), "HOST": "127.0.0.1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        # Apache's daemons run as www-data when started by root; its files must be reachable.
        self.server_root = Path(tempfile.mkdtemp(prefix="kras-apache-"))
        os.chmod(self.server_root, 0o755)
        self.redis = RedisServer(workdir, prefix=self.env.get("KEY_PREFIX") or "kras",
                                 queue_name=self.env.get("QUEUE_NAME") or "image_queue", tls=redis_tls,
                                 secrets_dir=self.server_root / "redis-secrets",
                                 maxmemory=redis_users.memory_limit(load_settings(self.env)),
                                 appendfsync=self.env.get("REDIS_APPENDFSYNC") or "everysec", replication=sentinel)
        # With `sentinel`: a replica of that Redis and three Sentinels; the tiers find the primary
        # through the Sentinels only.
        self.replica = RedisServer(workdir / "replica", prefix=self.redis.prefix, queue_name=self.redis.queue_name,
                                   secrets_dir=self.redis.secrets_dir, maxmemory=self.redis.maxmemory,
                                   appendfsync=self.redis.appendfsync, replica_of=self.redis) if sentinel else None
        self.sentinels = Sentinels(workdir / "sentinels", self.redis) if sentinel else None
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, model_servers: int = 1, timeout: float = 120) -> None:
        self.redis.start()
        self.env["REDIS_URL"] = self.redis.service_url
        if self.replica is not None and self.sentinels is not None:
            self.replica.start()
            self.sentinels.start()
            self.env.update(self.sentinels.settings())
        for n in range(model_servers):
            self.start_model_server(f"model_server{'' if n == 0 else n}")
        self.spawn("apache", [str(PROJECT / "apache" / "serve.sh")], APACHE_SERVER_ROOT=str(self.server_root / "root"),
                   **self.redis.settings_for(redis_users.WEB))
        wait_until(self._ready, timeout, f"{self.url}/ready (logs in {self.workdir})")

    @property
    def auth_headers(self) -> dict[str, str]:
        """An Authorization header with the first configured API key (none when the API is open)."""
        pairs = [pair for pair in self.env.get("API_KEYS", "").split(",") if ":" in pair]
        return {"Authorization": f"Bearer {pairs[0].split(':', 1)[1].strip()}"} if pairs else {}

    @property
    def model_server(self) -> subprocess.Popen:
        return self.processes["model_server"]

    def start_model_server(self, name: str, **extra: str) -> subprocess.Popen:
        return self.spawn(name, [str(VENV_PYTHON), "run_model_server.py"], MODEL_SERVER_NAME=name,
                          **{**self.redis.settings_for(redis_users.MODEL_SERVER), **extra})

    def spawn(self, name: str, command: list[str], **extra: str) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")
        process = subprocess.Popen(command, cwd=PROJECT, env={**self.env, **extra}, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.processes[name] = process
        return process

    def _ready(self) -> bool:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise AssertionError(f"{name} exited: {self.log(name)[-3000:]}")
        try:
            return requests.get(f"{self.url}/ready", headers=self.auth_headers, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def queue(self) -> JobQueue:
        """The stack's job queue, as its tiers see it (for assertions on Redis state)."""
        names = ("KEY_PREFIX", "QUEUE_NAME", "CONSUMER_GROUP")
        config = {**load_settings(), **{k: self.env[k] for k in names if k in self.env},
                  **self.redis.settings_for(redis_users.ADMIN),
                  **(self.sentinels.settings() if self.sentinels else {})}
        return queue_from_settings(config, read_timeout=10.0)

    def model_queue(self, version: str = "1") -> JobQueue:
        """The queue of the model the stack serves from a .keras file (MODEL), as its only version."""
        return self.queue().for_model(Path(self.env["MODEL"]).stem, version)

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def signal(self, name: str, signum: int) -> None:
        os.killpg(self.processes[name].pid, signum)

    def stop(self) -> None:
        for process in self.processes.values():
            try:
                os.killpg(process.pid, signal.SIGCONT)
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for process in self.processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        if self.sentinels is not None:
            self.sentinels.stop()
        for server in (self.redis, self.replica):
            if server is not None:
                server.stop()
        shutil.rmtree(self.server_root, ignore_errors=True)


@contextmanager
def running_stack(workdir: Path, settings: Mapping[str, object], **options: Any) -> Iterator[Stack]:
    """A started Stack (Redis, a model server, Apache), stopped on leaving, whatever happened."""
    if shutil.which("apxs") is None or not (PROJECT / ".venv/bin/mod_wsgi-express").exists():
        raise RuntimeError("Apache/mod_wsgi is not installed; run ./test.sh, which installs it")
    stack = Stack(workdir, settings, **options)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
