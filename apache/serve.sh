#!/usr/bin/env bash
# Serves the web tier through Apache + mod_wsgi in daemon mode (mod_wsgi-express), in the
# foreground, with the same daemon settings as the system vhost (deploy/keras-rest-api.conf.in,
# both rendered from settings.py). Settings come from
# settings.py and so from the environment (PORT, WSGI_PROCESSES, WSGI_THREADS, ...).
# Usage: apache/serve.sh [extra mod_wsgi-express options]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
project="$(dirname "$here")"
venv="${VENV:-$project/.venv}"
eval "$("$venv/bin/python" "$project/settings.py")"

server_root="${APACHE_SERVER_ROOT:-$project/.run/apache-$PORT}"
mkdir -p "$(dirname "$server_root")"
# Each daemon process keeps its metrics here, so /metrics sums them all; stale files from a
# previous run would be summed too, so the folder starts empty.
export METRICS_DIR="${METRICS_DIR:-$server_root-metrics}"
rm -rf "$METRICS_DIR" && mkdir -p "$METRICS_DIR"
if [ "$(id -u)" = 0 ]; then chown "${APACHE_USER:-www-data}:${APACHE_GROUP:-www-data}" "$METRICS_DIR"; fi

# Whole seconds for Apache; the app's own timeout (504 JSON) must fire before mod_wsgi's.
request_timeout=$(( ${REQUEST_TIMEOUT%.*} + 15 ))
# Room for multipart overhead, so uploads just over the limit get the app's JSON 413.
body_limit=$(( MAX_UPLOAD_BYTES + 1048576 ))

# Request bodies are read whole by Apache before a daemon thread takes them (buffer-bodies.conf);
# those over 1 MiB are spooled to this folder, writable by the daemons' user.
body_spool="$server_root-bodies"
rm -rf "$body_spool" && mkdir -p "$body_spool"
if [ "$(id -u)" = 0 ]; then chown "${APACHE_USER:-www-data}:${APACHE_GROUP:-www-data}" "$body_spool"; fi
# Read by buffer-bodies.conf (Apache expands ${NAME} from its environment).
export KRAS_BODY_LIMIT="$body_limit" KRAS_BODY_SPOOL="$body_spool"
# Read by access-log.conf: the access log, with job ids masked.
export KRAS_ACCESS_LOG="$server_root-access.log"

# The app is built once here, as the user its daemons run as: a setting or a file it refuses (an
# API_KEYS_FILE that user cannot read, a bad Redis password file) stops the start with the reason,
# instead of mod_wsgi answering 500 to every request and logging a traceback for each.
as_daemon=()
if [ "$(id -u)" = 0 ]; then as_daemon=(runuser -u "${APACHE_USER:-www-data}" --); fi
env -u METRICS_DIR "${as_daemon[@]}" "$venv/bin/python" -m keras_rest_api.wsgi || exit 2

args=(
  "$project/keras_rest_api_app.wsgi"
  --host "$HOST" --port "$PORT"
  --server-root "$server_root"
  --locale C.UTF-8
  --processes "$WSGI_PROCESSES" --threads "$WSGI_THREADS"
  --request-timeout "$request_timeout"
  --queue-timeout "$WSGI_QUEUE_TIMEOUT"
  --keep-alive-timeout "$KEEP_ALIVE_TIMEOUT"
  --limit-request-body "$body_limit"
  # Slow clients (mod_reqtimeout): a client trickling its headers or body is cut off with 408
  # after the first timeout unless it keeps up the minimum rate, and never lasts beyond the
  # maximum, so trickling connections cannot hold Apache's workers or the daemon threads.
  --header-timeout "$REQUEST_HEADER_TIMEOUT" --header-max-timeout "$REQUEST_HEADER_MAX_TIMEOUT"
  --header-min-rate "$REQUEST_HEADER_MIN_RATE"
  --body-timeout "$REQUEST_BODY_TIMEOUT" --body-max-timeout "$REQUEST_BODY_MAX_TIMEOUT"
  --body-min-rate "$REQUEST_BODY_MIN_RATE"
  --include-file "$here/buffer-bodies.conf"
  --max-clients "$APACHE_MAX_CLIENTS"
  # Start every Apache child up front: children spawned and reaped as load swings close their
  # keep-alive connections, and a client reusing one then sees "connection closed without response".
  --initial-workers 1
  --document-root "$here/htdocs"
  --include-file "$here/hardening.conf"
  --include-file "$here/access-log.conf"
  --log-to-terminal
  --python-path "$project"
)
for code in 408 413 500 502 503 504; do
  args+=(--error-document "$code" "/_errors/$code.json")
done
if [ "$(id -u)" = 0 ]; then
  # Apache started as root runs its daemons as an unprivileged user, which must be able
  # to read the project and the venv.
  args+=(--user "${APACHE_USER:-www-data}" --group "${APACHE_GROUP:-www-data}")
fi
exec "$venv/bin/mod_wsgi-express" start-server "${args[@]}" "$@"
