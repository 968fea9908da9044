"""The tutorial's deployment path for real: install into the machine's own Apache and service
manager with deploy/install.sh, start the model server through its installed service script,
`service apache2 restart`, classify an image, then deploy/uninstall.sh and find /etc/apache2
exactly as it was.

Redis is the secured one (ACL users, TLS, the default user off: tests/support/harness.py RedisServer)
and API keys are on: each tier connects as its own Redis user through the password file
install.sh copied for it, and no password or key shows in a rendered file, a process's
arguments or environment, or a log. Apache discloses nothing: `Server: Apache`, TRACE refused,
its own error pages without version or host.

Needs root and Debian's apache2 (./test.sh installs it). The vhost listens on a free port, not
80, and Apache is left running or stopped as it was found. A lock serialises runs on one machine.
"""
from __future__ import annotations

import fcntl
import grp
import hashlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import requests

from keras_rest_api.imaging.decode import decode_image
from keras_rest_api.queue import redis_users
from tests.support.harness import PROJECT, RedisServer, free_port, wait_until
from tests.support.web_checks import png_bytes

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="installs into the system Apache: needs root"),
    pytest.mark.skipif(shutil.which("apache2ctl") is None or not Path("/etc/apache2").is_dir(),
                       reason="Debian's apache2 is not installed (./test.sh installs it)"),
]

LOCK = Path("/run/lock/keras-rest-api-system-apache.lock")
SERVICE_USER = "keras-model-server"
CONF = Path("/etc/keras-rest-api")
# Everything the install may touch outside /etc/apache2, which is compared whole.
OTHER_PATHS = [Path("/etc/keras-rest-api"), Path("/etc/init.d/keras-model-server"),
               Path("/etc/systemd/system/keras-model-server@.service"), Path("/run/keras-model-server.pid"),
               Path("/var/cache/keras-rest-api"), Path("/var/log/keras-rest-api")]


def snapshot() -> dict[str, str]:
    """Every file and link under /etc/apache2 and the rc.d links, with content hash or target."""
    state = {}
    roots = [Path("/etc/apache2")] + sorted(Path("/etc").glob("rc?.d"))
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_symlink():
                state[str(path)] = "-> " + os.readlink(path)
            elif path.is_file():
                state[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    for path in OTHER_PATHS:
        state[str(path)] = "present" if path.exists() else "absent"
    try:
        state[f"user {SERVICE_USER}"] = str(pwd.getpwnam(SERVICE_USER).pw_uid)
    except KeyError:
        state[f"user {SERVICE_USER}"] = "absent"
    return state


def raw_http(port: int, request: bytes) -> bytes:
    """Send `request` as is (Apache answers malformed requests itself) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def assert_discloses_nothing(answer: bytes, port: int) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line)
    assert headers.get(b"Server") == b"Apache", head
    for detail in (b"Apache/", b"Debian", b"<address>", b"Server at", str(port).encode(), socket.gethostname().encode()):
        assert detail not in body, (detail, body)


def leaks(secret_values: list[str]) -> list[str]:
    """Processes whose arguments or environment hold any of `secret_values`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        for part in ("cmdline", "environ"):
            try:
                data = (proc / part).read_bytes()
            except OSError:
                continue
            if any(value.encode() in data for value in secret_values):
                found.append(f"{proc.name}/{part}")
    return found


def apache_running() -> bool:
    pidfile = Path("/run/apache2/apache2.pid")
    try:
        os.kill(int(pidfile.read_text().strip()), 0)
        return True
    except (OSError, ValueError):
        return False


def sh(*command: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.fixture()
def machine_lock() -> Iterator[None]:
    """One system-Apache test at a time on this machine (other checkouts run this test too)."""
    with open(LOCK, "w") as handle:
        def locked() -> bool:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False

        wait_until(locked, 900, f"the lock {LOCK} (another system-Apache test is running)")
        yield


@pytest.fixture()
def readable_model(tiny_model_files: dict[str, str]) -> Iterator[dict[str, str]]:
    """The tiny model where the model server, running as www-data, can read it."""
    directory = Path(tempfile.mkdtemp(prefix="kras-system-model-"))
    directory.chmod(0o755)
    files = dict(tiny_model_files)
    for key in ("MODEL", "MODEL_LABELS"):
        target = directory / Path(files[key]).name
        shutil.copyfile(files[key], target)
        target.chmod(0o644)
        files[key] = str(target)
    yield files
    shutil.rmtree(directory, ignore_errors=True)


# The logs the installed service writes (deploy/keras-rest-api.conf.in, deploy/keras-model-server.init.in).
PROJECT_LOGS = (Path("/var/log/keras-rest-api/model-server.log"), Path("/var/log/apache2/keras-rest-api-error.log"),
                Path("/var/log/apache2/keras-rest-api-access.log"))


def logs() -> str:
    """The end of each log, the machine's shared Apache error log too: for failure messages."""
    parts = []
    for path in (*PROJECT_LOGS, Path("/var/log/apache2/error.log")):
        if path.exists():
            parts.append(f"--- {path}\n{path.read_text(errors='replace')[-2500:]}")
    return "\n".join(parts)


def project_logs() -> dict[Path, str]:
    """The whole of each of the service's own logs: start-up lines, where a leak is likeliest,
    are at the beginning."""
    return {path: path.read_text(errors="replace") for path in PROJECT_LOGS}


def test_install_into_system_apache_classify_and_uninstall(machine_lock, readable_model, tiny_model, tmp_path):
    before = snapshot()
    was_running = apache_running()
    redis_dir = Path(tempfile.mkdtemp(prefix="kras-system-redis-"))
    prefix = "system-apache-test"
    # The harness's secured Redis: ACL users for this KEY_PREFIX, TLS only, the default user off.
    redis_server = RedisServer(redis_dir, prefix=prefix, tls=True)
    redis_server.start()
    api_key = secrets.token_hex(24)
    secret_values = [redis_server.prepared.password(role) for role in redis_users.ROLES] + [api_key]
    port = free_port()
    env = {**os.environ, **readable_model, "REDIS_URL": redis_server.service_url, "KEY_PREFIX": prefix,
           "REDIS_SECRETS_DIR": str(redis_server.secrets_dir), "API_KEYS": f"system-test:{api_key}",
           "VHOST_PORT": str(port), "WSGI_PROCESSES": "1", "WSGI_THREADS": "7", "HEARTBEAT_INTERVAL": "0.5",
           "MAX_UPLOAD_BYTES": "3000000"}
    auth = {"Authorization": f"Bearer {api_key}"}
    try:
        installed = sh(str(PROJECT / "deploy" / "install.sh"), str(PROJECT), env=env)
        # Rendered from the settings of the install's environment, not hard-coded.
        vhost = Path("/etc/apache2/sites-available/keras-rest-api.conf").read_text()
        assert "processes=1 threads=7" in vhost and f"<VirtualHost *:{port}>" in vhost
        assert f"LimitRequestBody {3000000 + 1024 * 1024}" in vhost
        assert f"REDIS_URL={redis_server.service_url}" in (CONF / "env").read_text()
        # install.sh tried each tier's credentials as that tier's user.
        assert "accepts the www-data tier's credentials" in installed, installed
        assert f"accepts the {SERVICE_USER} tier's credentials" in installed, installed

        # Each secret readable by its tier only; every other file names secrets, never holds one.
        service_uid = pwd.getpwnam(SERVICE_USER).pw_uid
        www_gid = grp.getgrnam("www-data").gr_gid
        for name, mode, uid, gid in (("redis-web.password", 0o640, 0, www_gid), ("api-keys", 0o640, 0, www_gid),
                                     ("redis-model-server.password", 0o600, service_uid, None)):
            info = (CONF / name).stat()
            assert (info.st_mode & 0o777, info.st_uid) == (mode, uid), name
            assert gid is None or info.st_gid == gid, name
        rendered = [path for path in CONF.iterdir()
                    if path.name not in {"redis-web.password", "redis-model-server.password", "api-keys"}]
        rendered += [Path("/etc/apache2/sites-available/keras-rest-api.conf"), Path("/etc/init.d/keras-model-server")]
        for path in rendered:
            text = path.read_text()
            assert not [v for v in secret_values if v in text], f"a secret is written in {path}"

        sh("service", "keras-model-server", "start")
        # The tutorial's `service apache2 restart`. When Apache is not running, Debian's init script
        # refuses a restart while other processes named apache2 run (mod_wsgi-express instances of
        # other tests on this machine), so it is started first, then restarted as the tutorial says.
        if not was_running:
            sh("service", "apache2", "start")
        sh("service", "apache2", "restart")
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return requests.get(f"{url}/ready", headers=auth, timeout=2).status_code == 200
            except requests.RequestException:
                return False

        try:
            wait_until(ready, 120, f"{url}/ready through the system Apache")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{logs()}") from None
        sh("service", "keras-model-server", "status")  # the init script finds its server running
        model_pid = int(Path("/run/keras-model-server.pid").read_text())
        assert Path(f"/proc/{model_pid}").stat().st_uid == service_uid  # not www-data

        image = png_bytes(11, size=(64, 48))
        response = requests.post(f"{url}/predict", files={"image": ("x.png", image)}, data={"top_k": "5"},
                                 headers=auth, timeout=30)
        assert response.status_code == 200, f"{response.status_code} {response.text}\n{logs()}"
        expected = tiny_model.predict(np.stack([decode_image(image, tiny_model.input_size, 10**8)]))[0]
        got = {p["label"]: p["probability"] for p in response.json()["predictions"]}
        assert got == pytest.approx({label: float(p) for label, p in zip(tiny_model.labels, expected)}, abs=1e-4)
        # API keys: liveness open, everything else needs the key.
        assert requests.get(f"{url}/health", timeout=10).status_code == 200
        refused = requests.post(f"{url}/predict", files={"image": ("x.png", image)}, timeout=30)
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
        # Apache's own errors are the project's JSON documents: a body over LimitRequestBody.
        too_big = requests.post(f"{url}/predict", data=b"\0" * (3000000 + 2 * 1024 * 1024),
                                headers={"Content-Type": "image/png", **auth}, timeout=30)
        assert too_big.status_code == 413 and too_big.json()["success"] is False

        # Each tier is connected as its own Redis user (the admin connection is this test's).
        users = {client["user"] for client in redis_server.client().client_list()}
        assert {"web", "model_server"} <= users, users
        # Minimal disclosure: "Server: Apache", TRACE refused, Apache's own error pages bare.
        assert requests.get(f"{url}/health", timeout=10).headers["Server"] == "Apache"
        trace = raw_http(port, b"TRACE / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + api_key.encode()
                         + b"\r\nConnection: close\r\n\r\n")
        assert trace.startswith(b"HTTP/1.1 405") and api_key.encode() not in trace, trace[:300]
        assert_discloses_nothing(trace, port)
        bad = raw_http(port, b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\nConnection: close\r\n\r\n")
        assert bad.startswith(b"HTTP/1.1 400"), bad[:300]
        assert_discloses_nothing(bad, port)

        # The model server stops on SIGTERM after answering what it holds, within the init
        # script's bounded wait (no SIGKILL: it logs its own clean stop).
        sh("service", "keras-model-server", "stop", timeout=90)
        assert not Path(f"/proc/{model_pid}").exists()
        assert " stopped" in Path("/var/log/keras-rest-api/model-server.log").read_text(), logs()
        # No secret in any process's arguments or environment, nor in a log.
        assert not leaks(secret_values), leaks(secret_values)
        whole = project_logs()
        # The scan reads the start-up lines and this run's requests (a scan of nothing finds nothing).
        assert " serving " in whole[PROJECT_LOGS[0]] and "/predict" in whole[PROJECT_LOGS[2]], logs()
        leaked = [f"{path} holds secret #{n}" for path, text in whole.items()
                  for n, value in enumerate(secret_values) if value in text]
        assert not leaked, leaked
    finally:
        uninstalled = subprocess.run([str(PROJECT / "deploy" / "uninstall.sh")], capture_output=True, text=True,
                                     timeout=180)
        if was_running:
            subprocess.run(["service", "apache2", "restart"], capture_output=True, timeout=120)
        else:
            subprocess.run(["service", "apache2", "stop"], capture_output=True, timeout=120)
        redis_server.stop()
        shutil.rmtree(redis_dir, ignore_errors=True)
    assert uninstalled.returncode == 0, uninstalled.stdout + uninstalled.stderr
    after = snapshot()
    changed = {path: (before.get(path), after.get(path)) for path in before.keys() | after.keys()
               if before.get(path) != after.get(path)}
    assert not changed, f"uninstall left the machine changed: {changed}"
    assert apache_running() == was_running
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/ready", timeout=2)
