#!/usr/bin/env bash
# Installs the service into Debian's system Apache and the machine's service manager, the way
# the tutorial deploys it:
#   sudo REDIS_SECRETS_DIR=/path/to/redis-secrets deploy/install.sh [PROJECT_DIR]
#   sudo service keras-model-server start     # (systemd: systemctl enable --now keras-model-server@0)
#   sudo service apache2 restart
# PROJECT_DIR (default: this checkout) must be readable by www-data, with its venv made by
# scripts/bootstrap.sh. What it does, all undone by deploy/uninstall.sh:
#  - renders the vhost, the model-server service and the env files from settings.py
#    (deploy/render.py), taking the settings from this environment: e.g.
#    sudo REDIS_URL=redis://queue:6379/0 WSGI_THREADS=64 deploy/install.sh
#  - /etc/keras-rest-api/{env,web.env,model-server.env,keras_rest_api.wsgi}: the settings both
#    tiers read, each tier's own (its Redis user and the path of its password file), and the
#    vhost's entry point that loads them;
#  - each tier's Redis password, copied from a file (never from an argument or the URL):
#    redis-web.password 0640 root:www-data, redis-model-server.password 0600 owned by the model
#    server's user; the CA of a TLS Redis as redis-ca.crt; API keys as api-keys 0640 root:www-data;
#  - mod_wsgi from the venv as Apache module wsgi_venv (`mod_wsgi-express module-config`; it
#    matches the venv's Python), a2enmod wsgi_venv alias, a2ensite keras-rest-api;
#  - zz-keras-rest-api-hardening.conf (a2enconf): ServerTokens Prod, ServerSignature Off,
#    TraceEnable Off for the whole Apache;
#  - the model server as /etc/init.d/keras-model-server (update-rc.d), or, where systemd is
#    PID 1, as keras-model-server@.service, running as its own system user (SERVICE_USER,
#    default keras-model-server, created if missing);
#  - /var/cache/keras-rest-api (converted models, the model server's user only may write) and
#    /var/log/keras-rest-api.
# Options (environment):
#   VHOST_PORT (default 80; another port gets its own Listen line), SERVER_NAME (default localhost),
#   SERVICE_USER (default keras-model-server)
#   Redis with ACL users (see README "Security"; keras-rest-api-redis-users rules prints them):
#     REDIS_SECRETS_DIR  a folder made by `python -m keras_rest_api.queue.redis_users prepare` (run.sh's .run/redis-secrets):
#                        web.password, model_server.password and tls/ca.crt are taken from it
#     REDIS_WEB_USER (default web), REDIS_WEB_PASSWORD_FILE
#     REDIS_MODEL_SERVER_USER (default model_server), REDIS_MODEL_SERVER_PASSWORD_FILE
#     REDIS_TLS_CA_FILE  with a rediss:// REDIS_URL: the CA that signed Redis's certificate
#     No password file: the tiers connect without authentication (a Redis without ACL users).
#   API keys: API_KEYS ('name:key,...') or API_KEYS_FILE (a file of name:key lines).
# Each tier's credentials are tried against Redis as that tier's user: refused ones stop the
# install; an unreachable Redis only warns (start it before the services).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
project="$(cd "${1:-$here/..}" && pwd)"
venv="${VENV:-$project/.venv}"
port="${VHOST_PORT:-80}"
service_user="${SERVICE_USER:-keras-model-server}"
conf_dir=/etc/keras-rest-api
secrets_dir="${REDIS_SECRETS_DIR:-}"
web_redis_user="${REDIS_WEB_USER:-web}"
model_redis_user="${REDIS_MODEL_SERVER_USER:-model_server}"
web_password_file="${REDIS_WEB_PASSWORD_FILE:-${secrets_dir:+$secrets_dir/web.password}}"
model_password_file="${REDIS_MODEL_SERVER_PASSWORD_FILE:-${secrets_dir:+$secrets_dir/model_server.password}}"
ca_file="${REDIS_TLS_CA_FILE:-}"
if [ -z "$ca_file" ] && [ -n "$secrets_dir" ] && [ -f "$secrets_dir/tls/ca.crt" ]; then ca_file="$secrets_dir/tls/ca.crt"; fi
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
[ -n "${REDIS_PASSWORD:-}" ] && fail "REDIS_PASSWORD is set: the tiers are different Redis users with passwords of their own; put them in files and set REDIS_WEB_PASSWORD_FILE and REDIS_MODEL_SERVER_PASSWORD_FILE (or REDIS_SECRETS_DIR)"
[ -n "$secrets_dir" ] && [ ! -d "$secrets_dir" ] && fail "REDIS_SECRETS_DIR=$secrets_dir is not a folder (expected one made by python -m keras_rest_api.queue.redis_users prepare)"
for secret in "$web_password_file" "$model_password_file" "$ca_file" "${API_KEYS_FILE:-}"; do
  [ -z "$secret" ] || [ -s "$secret" ] || fail "$secret does not exist or is empty (expected the secret on its first line)"
done
if { [ -n "$web_password_file" ] && [ -z "$model_password_file" ]; } || { [ -z "$web_password_file" ] && [ -n "$model_password_file" ]; }; then
  fail "set both REDIS_WEB_PASSWORD_FILE and REDIS_MODEL_SERVER_PASSWORD_FILE (each tier is its own Redis user), or neither"
fi
[ -n "${API_KEYS:-}" ] && [ -n "${API_KEYS_FILE:-}" ] && fail "set API_KEYS or API_KEYS_FILE, not both"

rendered="$(mktemp -d)"
trap 'rm -rf "$rendered"' EXIT
render_args=()
[ -n "$web_password_file" ] && render_args+=(--web-redis-user "$web_redis_user" --model-server-redis-user "$model_redis_user")
[ -n "$ca_file" ] && render_args+=(--redis-ca)
[ -n "${API_KEYS:-}${API_KEYS_FILE:-}" ] && render_args+=(--api-keys)
# API_KEYS is a secret: render.py never sees it (it is written to a file below).
env -u API_KEYS -u API_KEYS_FILE "$venv/bin/python" "$here/render.py" --out "$rendered" --project "$project" \
  --venv "$venv" --port "$port" --server-name "${SERVER_NAME:-localhost}" --service-user "$service_user" \
  "${render_args[@]}" >/dev/null

mkdir -p "$conf_dir"
# What this install changed that was not ours, so uninstall.sh puts it back exactly.
if [ ! -e "$conf_dir/installed" ]; then
  {
    echo "project=$project"
    [ -e /etc/apache2/mods-enabled/wsgi.load ] && echo "disabled_mod=wsgi"
    [ -e /etc/apache2/mods-enabled/alias.load ] || echo "enabled_mod=alias"
  } > "$conf_dir/installed"
fi
if ! id -u "$service_user" >/dev/null 2>&1; then
  log "creating the system user $service_user (the model server runs as it)"
  useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
    --comment "Keras REST API model server" "$service_user"
  echo "created_user=$service_user" >> "$conf_dir/installed"
fi
runuser -u "$service_user" -- test -r "$project/run_model_server.py" -a -x "$venv/bin/python" \
  || fail "$service_user cannot read $project or $venv: put the project somewhere world-readable"

install -m 0644 "$rendered/env" "$conf_dir/env"
install -m 0644 "$rendered/web.env" "$conf_dir/web.env"
install -m 0644 "$rendered/model-server.env" "$conf_dir/model-server.env"
install -m 0644 "$rendered/keras_rest_api.wsgi" "$conf_dir/keras_rest_api.wsgi"
# Secrets are copied file to file (no password in an argument, the environment of a child, or a
# log line), each readable only by the tier that uses it.
rm -f "$conf_dir/redis-web.password" "$conf_dir/redis-model-server.password" "$conf_dir/redis-ca.crt" "$conf_dir/api-keys"
if [ -n "$web_password_file" ]; then
  install -m 0640 -o root -g www-data "$web_password_file" "$conf_dir/redis-web.password"
  install -m 0600 -o "$service_user" -g "$service_user" "$model_password_file" "$conf_dir/redis-model-server.password"
else
  log "warning: no Redis password files (REDIS_SECRETS_DIR or REDIS_*_PASSWORD_FILE): the tiers connect without authentication"
fi
[ -n "$ca_file" ] && install -m 0644 "$ca_file" "$conf_dir/redis-ca.crt"
if [ -n "${API_KEYS_FILE:-}" ]; then
  install -m 0640 -o root -g www-data "$API_KEYS_FILE" "$conf_dir/api-keys"
elif [ -n "${API_KEYS:-}" ]; then
  # printf is a shell builtin: the keys go into the file without appearing in any process's arguments.
  (umask 077 && printf '%s\n' "$API_KEYS" | tr ',' '\n' > "$conf_dir/api-keys")
  chgrp www-data "$conf_dir/api-keys" && chmod 0640 "$conf_dir/api-keys"
fi
# The model cache: written by the model server only (a cache the web user could write would be
# a way to make the model server load a planted model).
install -d -m 0755 -o "$service_user" -g "$service_user" /var/cache/keras-rest-api /var/log/keras-rest-api

# Each tier's credentials, tried as that tier's own user (so the file permissions are tried too).
probe_as() {
  local user="$1" tier_env="$2" status=0
  runuser -u "$user" -- sh -c 'set -a; . "$1"; . "$2"; set +a; cd "$4" && exec "$3" -m keras_rest_api.queue.redis_users probe' sh \
    "$conf_dir/env" "$tier_env" "$venv/bin/python" "$project" || status=$?
  case "$status" in
    0) log "Redis accepts the $user tier's credentials" ;;
    3) log "warning: Redis does not answer now; start it before the services (the $user tier's credentials are untried)" ;;
    *) fail "the $user tier cannot use Redis with its credentials (above); fix them and re-run, or deploy/uninstall.sh" ;;
  esac
}
probe_as www-data "$conf_dir/web.env"
probe_as "$service_user" "$conf_dir/model-server.env"

log "Apache: module wsgi_venv from $venv, site keras-rest-api on port $port"
"$venv/bin/mod_wsgi-express" module-config | grep -v '^WSGIPythonHome' > /etc/apache2/mods-available/wsgi_venv.load
# Debian's libapache2-mod-wsgi-py3, if enabled, is built for another Python: one mod_wsgi only.
a2dismod -q wsgi >/dev/null 2>&1 || true
a2enmod -q wsgi_venv alias >/dev/null
install -m 0644 "$rendered/keras-rest-api.conf" /etc/apache2/sites-available/keras-rest-api.conf
a2ensite -q keras-rest-api >/dev/null
install -m 0644 "$rendered/zz-keras-rest-api-hardening.conf" /etc/apache2/conf-available/zz-keras-rest-api-hardening.conf
a2enconf -q zz-keras-rest-api-hardening >/dev/null

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
