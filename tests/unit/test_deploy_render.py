"""deploy/render.py: the system vhost, the model-server service and the env file come from settings.py."""
from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.harness import PROJECT

RENDER = PROJECT / "deploy" / "render.py"


def render(tmp_path: Path, *args: str, **env: str) -> Path:
    out = tmp_path / "out"
    environment = {"PATH": "/usr/bin:/bin", **env}
    subprocess.run([sys.executable, str(RENDER), "--out", str(out), "--project", "/srv/kras", *args],
                   env=environment, check=True, capture_output=True, timeout=60)
    return out


def test_vhost_takes_processes_threads_timeouts_and_body_limit_from_settings(tmp_path):
    out = render(tmp_path, "--port", "8123", WSGI_PROCESSES="3", WSGI_THREADS="12", WSGI_QUEUE_TIMEOUT="9",
                 REQUEST_TIMEOUT="20.5", MAX_UPLOAD_BYTES="1000", KEEP_ALIVE_TIMEOUT="4")
    vhost = (out / "keras-rest-api.conf").read_text()
    assert "Listen 8123\n<VirtualHost *:8123>" in vhost
    assert "processes=3 threads=12" in vhost
    assert "queue-timeout=9" in vhost and "request-timeout=35" in vhost
    assert f"LimitRequestBody {1000 + 1024 * 1024}" in vhost
    assert "KeepAlive On\n    KeepAliveTimeout 4" in vhost
    assert "python-home=/srv/kras/.venv" in vhost and "python-path=/srv/kras" in vhost
    # API keys arrive in the Authorization header, which mod_wsgi drops unless told to pass it.
    assert "WSGIPassAuthorization On" in vhost
    assert not re.search(r"@[A-Z_]+@", vhost)


def test_defaults_listen_on_debians_port_80_with_keep_alive_off(tmp_path):
    vhost = (render(tmp_path) / "keras-rest-api.conf").read_text()
    assert "<VirtualHost *:80>" in vhost and "\nListen" not in vhost
    assert "KeepAlive Off" in vhost and "processes=2 threads=32" in vhost


def env_values(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = "".join(shlex.split(value))
    return values


def test_env_file_holds_every_setting_quoted_for_sh(tmp_path):
    out = render(tmp_path, REDIS_URL="redis://queue:6379/0", MODEL="/models/my model.keras")
    values = env_values(out / "env")
    assert values["REDIS_URL"] == "redis://queue:6379/0"
    assert values["MODEL"] == "/models/my model.keras"
    assert values["MODEL_CACHE_DIR"] == "/var/cache/keras-rest-api"
    assert "BATCH_SIZE" in values and "PORT" not in values
    # sh reads it the same way (the init script sources it).
    echoed = subprocess.run(["sh", "-c", f"set -a; . {out / 'env'}; printf %s \"$MODEL\""],
                            capture_output=True, text=True, check=True, timeout=10).stdout
    assert echoed == "/models/my model.keras"


def test_each_tier_gets_its_own_redis_user_and_password_file_never_a_password(tmp_path):
    out = render(tmp_path, "--web-redis-user", "web", "--model-server-redis-user", "model_server", "--redis-ca",
                 "--api-keys", REDIS_URL="rediss://queue:6380/0", REDIS_USERNAME="someone", REDIS_PASSWORD="s3cret-pw",
                 REDIS_PASSWORD_FILE="/root/pw", API_KEYS="ops:0123456789abcdef0123")
    shared, web, model = env_values(out / "env"), env_values(out / "web.env"), env_values(out / "model-server.env")
    assert web == {"REDIS_USERNAME": "web", "REDIS_PASSWORD_FILE": "/etc/keras-rest-api/redis-web.password",
                   "API_KEYS_FILE": "/etc/keras-rest-api/api-keys"}
    assert model == {"REDIS_USERNAME": "model_server",
                     "REDIS_PASSWORD_FILE": "/etc/keras-rest-api/redis-model-server.password"}
    # Per-tier settings stay out of the shared file; the CA is shared (public).
    assert not {"REDIS_USERNAME", "REDIS_PASSWORD_FILE", "REDIS_PASSWORD", "API_KEYS", "API_KEYS_FILE"} & set(shared)
    assert shared["REDIS_TLS_CA_FILE"] == "/etc/keras-rest-api/redis-ca.crt"
    for path in out.iterdir():
        text = path.read_text()
        assert "s3cret-pw" not in text and "0123456789abcdef0123" not in text, path
    # The vhost's entry point loads the web tier's file after the shared one; the services the model server's.
    wsgi = (out / "keras_rest_api.wsgi").read_text()
    assert wsgi.index("/etc/keras-rest-api/env") < wsgi.index("/etc/keras-rest-api/web.env")
    assert "EnvironmentFile=/etc/keras-rest-api/model-server.env" in (out / "keras-model-server@.service").read_text()
    assert 'TIER_ENV_FILE=/etc/keras-rest-api/model-server.env' in (out / "keras-model-server").read_text()


def test_without_redis_users_the_tier_files_name_no_credentials(tmp_path):
    out = render(tmp_path)
    assert env_values(out / "web.env") == {} and env_values(out / "model-server.env") == {}


def test_a_redis_url_with_a_password_is_refused(tmp_path):
    result = subprocess.run([sys.executable, str(RENDER), "--out", str(tmp_path / "out")],
                            env={"PATH": "/usr/bin:/bin", "REDIS_URL": "redis://web:pw-in-url@queue:6379/0"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "REDIS_URL carries a password" in result.stderr
    assert "pw-in-url" not in result.stderr + result.stdout
    assert not (tmp_path / "out" / "env").exists()


def test_hardening_snippet_loads_after_debians_security_conf(tmp_path):
    out = render(tmp_path)
    (snippet,) = out.glob("*hardening.conf")
    # conf-enabled/*.conf is read in name order and the last ServerTokens wins.
    assert snippet.name > "security.conf"
    directives = [line.split() for line in snippet.read_text().splitlines() if line and not line.startswith("#")]
    assert directives == [["ServerTokens", "Prod"], ["ServerSignature", "Off"], ["TraceEnable", "Off"]]


def test_model_server_runs_as_its_own_user_and_stops_bounded(tmp_path):
    out = render(tmp_path, "--service-user", "kras-ms")
    unit = (out / "keras-model-server@.service").read_text()
    assert "User=kras-ms" in unit and "Group=kras-ms" in unit and "User=www-data" not in unit
    assert "KillSignal=SIGTERM" in unit and "TimeoutStopSec=60" in unit
    init = (out / "keras-model-server").read_text()
    assert "USER=kras-ms" in init and "X-Stop-After:      apache2" in init


def test_services_run_the_projects_venv_and_read_the_env_file(tmp_path):
    out = render(tmp_path, "--venv", "/opt/venv")
    unit = (out / "keras-model-server@.service").read_text()
    assert "ExecStart=/opt/venv/bin/python run_model_server.py" in unit
    assert "EnvironmentFile=/etc/keras-rest-api/env" in unit and "Before=apache2.service" in unit
    init = (out / "keras-model-server").read_text()
    assert "PYTHON=/opt/venv/bin/python" in init and "TERM/$STOP_TIMEOUT/KILL" in init
    assert (out / "keras-model-server").stat().st_mode & 0o111
    subprocess.run(["sh", "-n", str(out / "keras-model-server")], check=True, timeout=10)
    wsgi = (out / "keras_rest_api.wsgi").read_text()
    compile(wsgi, "keras_rest_api.wsgi", "exec")
    assert "/srv/kras/keras_rest_api_app.wsgi" in wsgi


def test_a_bad_setting_fails_naming_it(tmp_path):
    result = subprocess.run([sys.executable, str(RENDER), "--out", str(tmp_path)], env={"WSGI_THREADS": "many"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "WSGI_THREADS" in result.stderr


def test_a_placeholder_without_a_value_is_an_error():
    # deploy/render.py is a script, not a module of a package: loaded from its file.
    spec = importlib.util.spec_from_file_location("deploy_render", RENDER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(KeyError, match="NOPE"):
        module.fill("x @NOPE@", {}, "t")
