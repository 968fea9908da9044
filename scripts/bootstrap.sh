#!/usr/bin/env bash
# Installs what is missing, idempotently: Debian packages (Redis, Apache with its headers,
# Python's venv and headers), the venv from Debian's python3, and the Python dependencies
# declared in pyproject.toml.
# Apache started as root runs its daemons as www-data, which cannot read a Python under
# root's home; Debian's /usr/bin/python3 it can, so the venv is made from that.
set -euo pipefail
project="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$project/.venv}"
log() { echo "[bootstrap] $*" >&2; }

# chromium and chromium-driver: the browser tests of the pages (tests/system/test_browser.py).
# libapache2-mod-security2: Apache reads request bodies whole before the app sees them (apache/buffer-bodies.conf).
# redis-sentinel: the failover tests (tests/system/test_redis_failover.py); production Sentinels are your own.
# openssl: the CA and certificate of Redis's TLS port (keras_rest_api/queue/redis_users.py, with rediss:// URLs).
apt_packages=(redis-server redis-sentinel redis-tools apache2 apache2-dev libapache2-mod-security2 python3 python3-venv python3-dev curl iproute2 openssl chromium chromium-driver)
missing=()
for package in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  sudo_cmd=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { log "need root (or sudo) to install: ${missing[*]}"; exit 1; }
    sudo_cmd=(sudo)
  fi
  "${sudo_cmd[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -x "$venv/bin/python" ]; then
  log "creating the virtual environment $venv from /usr/bin/python3"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
fi

# Dependencies come from pyproject.toml: the runtime ones plus the extras in EXTRAS
# (default: test and bench, so ./test.sh and the benchmark work; EXTRAS=jax or torch adds a
# Keras backend). Then the package itself, editable: the venv's console scripts
# (keras-model-server, ...) run this checkout's code. A stamp of pyproject.toml and the
# extras makes re-runs instant; any change to either reinstalls.
extras="${EXTRAS-test,bench}"
# The Keras backend's own extra: `KERAS_BACKEND=jax ./run.sh` installs jax on a fresh machine.
case "${KERAS_BACKEND:-tensorflow}" in
  jax|torch) [[ ",$extras," == *",$KERAS_BACKEND,"* ]] || extras="${extras:+$extras,}$KERAS_BACKEND" ;;
  tensorflow) ;;
  *) log "KERAS_BACKEND=$KERAS_BACKEND is not a Keras backend; set it to tensorflow, jax or torch"; exit 1 ;;
esac
stamp="$venv/.pyproject-deps.sha256"
wanted="$( (cat "$project/pyproject.toml"; echo "extras=$extras") | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  log "installing Python packages from pyproject.toml, extras '${extras}' (first time: a few minutes)"
  requirements="$(mktemp)"
  trap 'rm -f "$requirements"' EXIT
  "$venv/bin/python" "$project/scripts/requirements.py" "$extras" > "$requirements"
  # A cached mod_wsgi wheel may have been built against another libpython: build it here.
  "$venv/bin/pip" install -q --no-cache-dir "$(grep -E '^mod_wsgi' "$requirements")"
  "$venv/bin/pip" install -q -r "$requirements"
  "$venv/bin/pip" install -q "setuptools>=68"  # the package's build backend, for the offline build below
  "$venv/bin/pip" install -q --no-deps --no-build-isolation -e "$project"
  rm -f "$requirements"
  trap - EXIT
  echo "$wanted" > "$stamp"
fi

if [ "$(id -u)" = 0 ] && id www-data >/dev/null 2>&1; then
  if ! runuser -u www-data -- test -r "$project/keras_rest_api_app.wsgi" -a -x "$venv/bin/python"; then
    log "www-data (Apache's daemon user) cannot read $project or $venv."
    log "Move the project somewhere world-readable (e.g. /srv/keras-rest-api) or run as a normal user."
    exit 1
  fi
fi
