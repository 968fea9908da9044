#!/usr/bin/env bash
# Installs the service into Debian's system Apache and the machine's service manager, the way
# the tutorial deploys it:
#   sudo deploy/install.sh [PROJECT_DIR]
#   sudo service keras-model-server start     # (systemd: systemctl enable --now keras-model-server@0)
#   sudo service apache2 restart
# PROJECT_DIR (default: this checkout) must be readable by www-data, with its venv made by
# scripts/bootstrap.sh. What it does, all undone by deploy/uninstall.sh:
#  - renders the vhost, the model-server service and the env file from settings.py
#    (deploy/render.py), taking the settings from this environment: e.g.
#    sudo REDIS_URL=redis://queue:6379/0 WSGI_THREADS=64 deploy/install.sh
#  - /etc/keras-rest-api/{env,keras_rest_api.wsgi}: the settings both tiers read, and the vhost's
#    entry point that loads them;
#  - mod_wsgi from the venv as Apache module wsgi_venv (`mod_wsgi-express module-config`; it
#    matches the venv's Python), a2enmod wsgi_venv alias, a2ensite keras-rest-api;
#  - the model server as /etc/init.d/keras-model-server (update-rc.d), or, where systemd is
#    PID 1, as keras-model-server@.service;
#  - /var/cache/keras-rest-api (converted models) and /var/log/keras-rest-api, owned by www-data.
# Options (environment): VHOST_PORT (default 80; another port gets its own Listen line),
# SERVER_NAME (default localhost).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
project="$(cd "${1:-$here/..}" && pwd)"
venv="${VENV:-$project/.venv}"
port="${VHOST_PORT:-80}"
conf_dir=/etc/keras-rest-api
log() { echo "[install] $*" >&2; }
fail() { echo "[install] error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root: sudo $0 $*"
command -v apache2ctl >/dev/null || fail "Apache is not installed: apt-get install apache2 apache2-dev (or run scripts/bootstrap.sh)"
[ -x "$venv/bin/mod_wsgi-express" ] || fail "no mod_wsgi in $venv: run $project/scripts/bootstrap.sh first"
[ -f "$project/keras_rest_api_app.wsgi" ] || fail "$project is not the project's folder (no keras_rest_api_app.wsgi)"
runuser -u www-data -- test -r "$project/keras_rest_api_app.wsgi" -a -x "$venv/bin/python" \
  || fail "www-data (Apache's daemon user) cannot read $project or $venv: put the project somewhere world-readable, e.g. /srv/keras-rest-api"
[ -e /etc/apache2/sites-available/keras-rest-api.conf ] && [ ! -e "$conf_dir/installed" ] \
  && fail "/etc/apache2/sites-available/keras-rest-api.conf exists but was not installed by this script: remove it first"

rendered="$(mktemp -d)"
trap 'rm -rf "$rendered"' EXIT
"$venv/bin/python" "$here/render.py" --out "$rendered" --project "$project" --venv "$venv" \
  --port "$port" --server-name "${SERVER_NAME:-localhost}" >/dev/null

mkdir -p "$conf_dir"
# What this install changed that was not ours, so uninstall.sh puts it back exactly.
if [ ! -e "$conf_dir/installed" ]; then
  {
    echo "project=$project"
    [ -e /etc/apache2/mods-enabled/wsgi.load ] && echo "disabled_mod=wsgi"
    [ -e /etc/apache2/mods-enabled/alias.load ] || echo "enabled_mod=alias"
  } > "$conf_dir/installed"
fi
install -m 0644 "$rendered/env" "$conf_dir/env"
install -m 0644 "$rendered/keras_rest_api.wsgi" "$conf_dir/keras_rest_api.wsgi"
install -d -o www-data -g www-data /var/cache/keras-rest-api /var/log/keras-rest-api

log "Apache: module wsgi_venv from $venv, site keras-rest-api on port $port"
"$venv/bin/mod_wsgi-express" module-config | grep -v '^WSGIPythonHome' > /etc/apache2/mods-available/wsgi_venv.load
# Debian's libapache2-mod-wsgi-py3, if enabled, is built for another Python: one mod_wsgi only.
a2dismod -q wsgi >/dev/null 2>&1 || true
a2enmod -q wsgi_venv alias >/dev/null
install -m 0644 "$rendered/keras-rest-api.conf" /etc/apache2/sites-available/keras-rest-api.conf
a2ensite -q keras-rest-api >/dev/null

if [ -d /run/systemd/system ]; then
  log "model server: systemd unit keras-model-server@.service"
  install -m 0644 "$rendered/keras-model-server@.service" /etc/systemd/system/keras-model-server@.service
  systemctl daemon-reload
  next="systemctl enable --now keras-model-server@0"
else
  log "model server: /etc/init.d/keras-model-server (systemd is not PID 1 here)"
  install -m 0755 "$rendered/keras-model-server" /etc/init.d/keras-model-server
  update-rc.d keras-model-server defaults >/dev/null 2>&1 || true
  next="service keras-model-server start"
fi

apache2ctl configtest 2>&1 | grep -v "^Syntax OK" >&2 || true
apache2ctl -t >/dev/null 2>&1 || fail "apache2ctl configtest failed (above); deploy/uninstall.sh undoes this install"
log "installed. Settings: $conf_dir/env. Now: sudo $next && sudo service apache2 restart"
log "then: curl -F image=@$project/samples/chelsea.jpg http://127.0.0.1:$port/predict"
