"""Render the system deployment files from settings.py: the Apache vhost, the model-server
service (systemd unit and /etc/init.d script), the env file both tiers read, and the vhost's
WSGI entry point.

    python deploy/render.py --out DIR [--project DIR] [--venv DIR] [--port 80] [--server-name NAME]

Settings are read exactly as the services read them: settings.py's defaults, overridden by
environment variables of the same names (so `REDIS_URL=redis://queue:6379/0 sudo -E deploy/install.sh`
bakes that Redis into the env file). deploy/install.sh runs this and copies the results into place.
Standard library and settings.py only: it runs before anything else is installed.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Mapping

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent

# Where the installed files live (deploy/install.sh and deploy/uninstall.sh use the same paths).
CONF_DIR = "/etc/keras-rest-api"
ENV_FILE = f"{CONF_DIR}/env"
LOG_DIR = "/var/log/keras-rest-api"
CACHE_DIR = "/var/cache/keras-rest-api"
# Debian's ports.conf already listens on 80; any other port needs a Listen line of its own.
DEBIAN_PORTS = {80}
# Room for multipart overhead above MAX_UPLOAD_BYTES, so uploads just over the app's limit get
# the app's JSON 413 rather than Apache's (the same margin apache/serve.sh gives mod_wsgi-express).
MULTIPART_ROOM = 1024 * 1024
# Settings that describe run.sh / mod_wsgi-express only; they mean nothing to the system vhost.
LOCAL_ONLY = {"HOST", "PORT", "APACHE_SERVER_ROOT"}

TEMPLATES = {
    "keras-rest-api.conf": "keras-rest-api.conf.in",
    "keras-model-server@.service": "keras-model-server@.service.in",
    "keras-model-server": "keras-model-server.init.in",
}

WSGI_ENTRY = '''"""WSGI entry point of the system Apache vhost, rendered by deploy/render.py.

Apache's daemon processes do not inherit a service's environment, so the settings come from
{env_file} (the file the model server reads too), then the project's own entry point runs.
"""
import os
import runpy
import shlex

with open({env_file!r}, encoding="utf-8") as settings_file:
    for line in settings_file:
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            os.environ[name] = "".join(shlex.split(value))

application = runpy.run_path({entry!r})["application"]
'''


def load_settings() -> dict[str, object]:
    """settings.py's values under the current environment, as the services will see them.

    The settings.py beside this renderer: the installed checkout runs the same code."""
    sys.path.insert(0, str(PROJECT))
    try:
        import settings
    finally:
        sys.path.remove(str(PROJECT))
    # Secrets (REDIS_PASSWORD, API_KEYS) never go into rendered files: use the *_FILE settings.
    secrets = set(getattr(settings, "_SECRETS", ()))
    return {name: getattr(settings, name) for name in dir(settings)
            if name.isupper() and not name.startswith("_") and name not in secrets
            and isinstance(getattr(settings, name), (str, int, float))}


def template_values(values: Mapping[str, object], project: Path, venv: Path, port: int,
                    server_name: str) -> dict[str, str]:
    """Every @NAME@ the templates use, from the settings and the install's own choices."""
    # Whole seconds for Apache; the app's own timeout (504 JSON) must fire before mod_wsgi's.
    request_timeout = int(float(values["REQUEST_TIMEOUT"])) + 15
    keep_alive = int(values["KEEP_ALIVE_TIMEOUT"])
    return {
        "PROJECT": str(project),
        "VENV": str(venv),
        "CONF_DIR": CONF_DIR,
        "ENV_FILE": ENV_FILE,
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


def env_file(values: Mapping[str, object]) -> str:
    """The settings as NAME=value lines, quoted for sh (systemd's EnvironmentFile reads them too)."""
    settings = dict(values)
    if "MODEL_CACHE_DIR" not in os.environ:
        # The daemons run as www-data, whose home is not theirs to write: cache in /var/cache.
        settings["MODEL_CACHE_DIR"] = CACHE_DIR
    lines = ["# Keras REST API settings, rendered from settings.py by deploy/render.py at install time.",
             "# Read by Apache's daemon processes and the model server; restart both after a change."]
    lines += [f"{name}={shlex.quote(str(value))}" for name, value in sorted(settings.items())
              if name not in LOCAL_ONLY]
    return "\n".join(lines) + "\n"


def render(out: Path, project: Path = PROJECT, venv: Path | None = None, port: int = 80,
           server_name: str = "localhost") -> list[Path]:
    """Write every deployment file into `out`; return their paths."""
    venv = venv or project / ".venv"
    values = load_settings()
    substitutions = template_values(values, project, venv, port, server_name)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for target, source in TEMPLATES.items():
        path = out / target
        path.write_text(fill((HERE / source).read_text(), substitutions, source))
        written.append(path)
    (out / "keras-model-server").chmod(0o755)
    (out / "env").write_text(env_file(values))
    (out / "keras_rest_api.wsgi").write_text(
        WSGI_ENTRY.format(env_file=ENV_FILE, entry=str(project / "keras_rest_api_app.wsgi")))
    return written + [out / "env", out / "keras_rest_api.wsgi"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the rendered files")
    parser.add_argument("--project", type=Path, default=PROJECT, help="the checkout Apache serves")
    parser.add_argument("--venv", type=Path, help="its venv (default PROJECT/.venv)")
    parser.add_argument("--port", type=int, default=80, help="the vhost's port (default 80)")
    parser.add_argument("--server-name", default="localhost", help="the vhost's ServerName")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port must be 1-65535, got {args.port}")
    for path in render(args.out, args.project.absolute(), args.venv, args.port, args.server_name):
        print(path)


if __name__ == "__main__":
    main()
