"""Render the system deployment files from settings.py: the Apache vhost, the server-wide
hardening snippet, the model-server service (systemd unit and /etc/init.d script), the env file
both tiers read plus one env file per tier (its Redis user and password file), and the vhost's
WSGI entry point.

    python deploy/render.py --out DIR [--project DIR] [--venv DIR] [--port 80] [--server-name NAME]
        [--service-user keras-model-server] [--web-redis-user web] [--model-server-redis-user model_server]
        [--redis-ca] [--api-keys]

Settings are read exactly as the services read them: settings.py's defaults, overridden by
environment variables of the same names (so `REDIS_URL=redis://queue:6379/0 sudo -E deploy/install.sh`
bakes that Redis into the env file). deploy/install.sh runs this and copies the results into place.
Standard library and settings.py only: it runs before anything else is installed.

No secret is ever rendered: the files name password and key files (installed by install.sh,
readable only by the tier that needs them), and a REDIS_URL with a password in it is refused.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
from pathlib import Path
from typing import Mapping

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent

# Where the installed files live (deploy/install.sh and deploy/uninstall.sh use the same paths).
CONF_DIR = "/etc/keras-rest-api"
ENV_FILE = f"{CONF_DIR}/env"
# Per tier: its Redis user and password file (and the web tier's API keys). The two tiers are
# different Redis users with different rights (keras_rest_api/queue/redis_users.py), so each reads only its own.
WEB_ENV_FILE = f"{CONF_DIR}/web.env"
MODEL_SERVER_ENV_FILE = f"{CONF_DIR}/model-server.env"
# Secrets install.sh copies in: the web tier's 0640 root:www-data (Apache's daemons read them),
# the model server's 0600 owned by its service user.
WEB_PASSWORD_FILE = f"{CONF_DIR}/redis-web.password"
MODEL_SERVER_PASSWORD_FILE = f"{CONF_DIR}/redis-model-server.password"
API_KEYS_FILE = f"{CONF_DIR}/api-keys"
# The CA that signed Redis's certificate (public; both tiers verify Redis with it).
REDIS_CA_FILE = f"{CONF_DIR}/redis-ca.crt"
# The model server runs as a user of its own, not as Apache's www-data: the web tier (and any
# other site of this Apache) can then read neither its Redis password nor write its model cache.
SERVICE_USER = "keras-model-server"
LOG_DIR = "/var/log/keras-rest-api"
CACHE_DIR = "/var/cache/keras-rest-api"
# Debian's ports.conf already listens on 80; any other port needs a Listen line of its own.
DEBIAN_PORTS = {80}
# Room for multipart overhead above MAX_UPLOAD_BYTES, so uploads just over the app's limit get
# the app's JSON 413 rather than Apache's (the same margin apache/serve.sh gives mod_wsgi-express).
MULTIPART_ROOM = 1024 * 1024
# Settings that describe run.sh / mod_wsgi-express only; they mean nothing to the system vhost.
LOCAL_ONLY = {"HOST", "PORT", "APACHE_SERVER_ROOT"}
# Settings that differ per tier: they go into web.env / model-server.env, never the shared file.
PER_TIER = {"REDIS_USERNAME", "REDIS_PASSWORD_FILE", "REDIS_TLS_CERT_FILE", "REDIS_TLS_KEY_FILE", "API_KEYS_FILE"}
# A user:password part in a URL (the password would end up in a world-readable file).
URL_PASSWORD = re.compile(r"^\w+://[^@/]*:[^@/]*@")

TEMPLATES = {
    "keras-rest-api.conf": "keras-rest-api.conf.in",
    "keras-model-server@.service": "keras-model-server@.service.in",
    "keras-model-server": "keras-model-server.init.in",
    "zz-keras-rest-api-hardening.conf": "keras-rest-api-hardening.conf.in",
}

WSGI_ENTRY = '''"""WSGI entry point of the system Apache vhost, rendered by deploy/render.py.

Apache's daemon processes do not inherit a service's environment, so the settings come from
{env_file} (the file the model server reads too) and {web_env_file} (the web tier's Redis
user and password file), then the project's own entry point runs.
"""
import os
import runpy
import shlex

for path in ({env_file!r}, {web_env_file!r}):
    with open(path, encoding="utf-8") as settings_file:
        for line in settings_file:
            line = line.strip()
            if line and not line.startswith("#"):
                name, _, value = line.partition("=")
                os.environ[name] = "".join(shlex.split(value))

application = runpy.run_path({entry!r})["application"]
'''


def load_settings() -> dict[str, object]:
    """The settings under the current environment, as the services will see them.

    Read with the settings module of the checkout beside this renderer (the installed checkout
    runs the same code), loaded from its file: nothing else of the package, nor its
    dependencies, need be importable yet."""
    spec = importlib.util.spec_from_file_location("_keras_rest_api_settings",
                                                  PROJECT / "keras_rest_api" / "settings.py")
    assert spec is not None and spec.loader is not None
    settings = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(settings)
    # Secrets (REDIS_PASSWORD, API_KEYS) never go into rendered files: use the *_FILE settings.
    secrets = set(settings._SECRETS)
    return {name: value for name, value in settings.load().items() if name not in secrets}


def template_values(values: Mapping[str, object], project: Path, venv: Path, port: int,
                    server_name: str, service_user: str = SERVICE_USER) -> dict[str, str]:
    """Every @NAME@ the templates use, from the settings and the install's own choices."""
    # Whole seconds for Apache; the app's own timeout (504 JSON) must fire before mod_wsgi's.
    request_timeout = int(float(values["REQUEST_TIMEOUT"])) + 15
    keep_alive = int(values["KEEP_ALIVE_TIMEOUT"])
    return {
        "PROJECT": str(project),
        "VENV": str(venv),
        "CONF_DIR": CONF_DIR,
        "ENV_FILE": ENV_FILE,
        "MODEL_SERVER_ENV_FILE": MODEL_SERVER_ENV_FILE,
        "SERVICE_USER": service_user,
        "LOG_DIR": LOG_DIR,
        "VHOST_PORT": str(port),
        "LISTEN": "" if port in DEBIAN_PORTS else f"Listen {port}",
        "SERVER_NAME": server_name,
        "WSGI_PROCESSES": str(values["WSGI_PROCESSES"]),
        "WSGI_THREADS": str(values["WSGI_THREADS"]),
        "WSGI_QUEUE_TIMEOUT": str(values["WSGI_QUEUE_TIMEOUT"]),
        "APACHE_REQUEST_TIMEOUT": str(request_timeout),
        "APACHE_SOCKET_TIMEOUT": str(request_timeout + 15),
        "KEEP_ALIVE": f"KeepAlive On\n    KeepAliveTimeout {keep_alive}" if keep_alive > 0 else "KeepAlive Off",
        "LIMIT_REQUEST_BODY": str(int(values["MAX_UPLOAD_BYTES"]) + MULTIPART_ROOM),
        "REQUEST_READ_TIMEOUT": (
            f"header={values['REQUEST_HEADER_TIMEOUT']}-{values['REQUEST_HEADER_MAX_TIMEOUT']},"
            f"MinRate={values['REQUEST_HEADER_MIN_RATE']} "
            f"body={values['REQUEST_BODY_TIMEOUT']}-{values['REQUEST_BODY_MAX_TIMEOUT']},"
            f"MinRate={values['REQUEST_BODY_MIN_RATE']}"
        ),
        "APACHE_MAX_CLIENTS": str(values["APACHE_MAX_CLIENTS"]),
    }


def fill(template: str, values: Mapping[str, str], name: str) -> str:
    """Replace each @NAME@; a placeholder without a value is an error, not a silent blank."""
    missing = sorted(set(re.findall(r"@([A-Z_]+)@", template)) - set(values))
    if missing:
        raise KeyError(f"{name} uses {missing}, which render.py does not define")
    return re.sub(r"@([A-Z_]+)@", lambda m: values[m.group(1)], template)


def _lines(header: list[str], settings: Mapping[str, object]) -> str:
    lines = header + [f"{name}={shlex.quote(str(value))}" for name, value in sorted(settings.items())]
    return "\n".join(lines) + "\n"


def env_file(values: Mapping[str, object], redis_ca: bool = False) -> str:
    """The settings both tiers share as NAME=value lines, quoted for sh (systemd's
    EnvironmentFile reads them too). Per-tier settings are left to `tier_env_file`."""
    settings = {name: value for name, value in values.items() if name not in LOCAL_ONLY | PER_TIER}
    if URL_PASSWORD.match(str(settings.get("REDIS_URL", ""))):
        raise ValueError(
            "REDIS_URL carries a password; it would be written into the world-readable "
            f"{ENV_FILE}. Expected a URL without credentials (e.g. redis://queue:6379/0) and the "
            "tiers' passwords in files: REDIS_WEB_PASSWORD_FILE and REDIS_MODEL_SERVER_PASSWORD_FILE "
            "(or REDIS_SECRETS_DIR) for deploy/install.sh.")
    if "MODEL_CACHE_DIR" not in os.environ:
        # The model server's user has no home of its own to write: cache in /var/cache.
        settings["MODEL_CACHE_DIR"] = CACHE_DIR
    if redis_ca:
        settings["REDIS_TLS_CA_FILE"] = REDIS_CA_FILE
    return _lines(["# Keras REST API settings, rendered from settings.py by deploy/render.py at install time.",
                   "# Read by Apache's daemon processes and the model server; restart both after a change.",
                   f"# Each tier's Redis user and password file are in {WEB_ENV_FILE} and {MODEL_SERVER_ENV_FILE}."],
                  settings)


def tier_env_file(tier: str, redis_user: str, api_keys: bool = False) -> str:
    """One tier's own settings: its Redis user and the path (never the content) of its password
    file, and for the web tier the API keys file. An empty user: Redis without authentication."""
    password_file = WEB_PASSWORD_FILE if tier == "web" else MODEL_SERVER_PASSWORD_FILE
    settings: dict[str, object] = {}
    if redis_user:
        settings.update(REDIS_USERNAME=redis_user, REDIS_PASSWORD_FILE=password_file)
    if api_keys:
        settings["API_KEYS_FILE"] = API_KEYS_FILE
    return _lines([f"# The {tier} tier's own settings, rendered by deploy/render.py (read after {ENV_FILE}).",
                   "# Paths of secrets only; the secrets themselves are in files only this tier can read."],
                  settings)


def render(out: Path, project: Path = PROJECT, venv: Path | None = None, port: int = 80,
           server_name: str = "localhost", service_user: str = SERVICE_USER, web_redis_user: str = "",
           model_server_redis_user: str = "", redis_ca: bool = False, api_keys: bool = False) -> list[Path]:
    """Write every deployment file into `out`; return their paths."""
    venv = venv or project / ".venv"
    values = load_settings()
    shared_env = env_file(values, redis_ca)
    substitutions = template_values(values, project, venv, port, server_name, service_user)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for target, source in TEMPLATES.items():
        path = out / target
        path.write_text(fill((HERE / source).read_text(), substitutions, source))
        written.append(path)
    (out / "keras-model-server").chmod(0o755)
    (out / "env").write_text(shared_env)
    (out / "web.env").write_text(tier_env_file("web", web_redis_user, api_keys))
    (out / "model-server.env").write_text(tier_env_file("model-server", model_server_redis_user))
    (out / "keras_rest_api.wsgi").write_text(
        WSGI_ENTRY.format(env_file=ENV_FILE, web_env_file=WEB_ENV_FILE, entry=str(project / "keras_rest_api_app.wsgi")))
    return written + [out / "env", out / "web.env", out / "model-server.env", out / "keras_rest_api.wsgi"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the rendered files")
    parser.add_argument("--project", type=Path, default=PROJECT, help="the checkout Apache serves")
    parser.add_argument("--venv", type=Path, help="its venv (default PROJECT/.venv)")
    parser.add_argument("--port", type=int, default=80, help="the vhost's port (default 80)")
    parser.add_argument("--server-name", default="localhost", help="the vhost's ServerName")
    parser.add_argument("--service-user", default=SERVICE_USER, help=f"the model server's user (default {SERVICE_USER})")
    parser.add_argument("--web-redis-user", default="",
                        help=f"the web tier's Redis user (password in {WEB_PASSWORD_FILE}); empty: no Redis auth")
    parser.add_argument("--model-server-redis-user", default="",
                        help=f"the model server's Redis user (password in {MODEL_SERVER_PASSWORD_FILE})")
    parser.add_argument("--redis-ca", action="store_true", help=f"the tiers verify Redis's TLS with {REDIS_CA_FILE}")
    parser.add_argument("--api-keys", action="store_true", help=f"the web tier requires the API keys in {API_KEYS_FILE}")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port must be 1-65535, got {args.port}")
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", args.service_user):
        parser.error(f"--service-user must be a user name (lowercase letters, digits, _ and -), got {args.service_user!r}")
    try:
        paths = render(args.out, args.project.absolute(), args.venv, args.port, args.server_name, args.service_user,
                       args.web_redis_user, args.model_server_redis_user, args.redis_ca, args.api_keys)
    except ValueError as exc:
        parser.exit(2, f"render.py: error: {exc}\n")
    for path in paths:
        print(path)


if __name__ == "__main__":
    main()
