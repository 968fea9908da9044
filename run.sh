#!/usr/bin/env bash
# Runs the whole system in the foreground on 127.0.0.1:$PORT (default 8000): Redis (unless one
# already answers at REDIS_URL, or REDIS_SENTINELS names Sentinels), the model server, and Apache
# with mod_wsgi in daemon mode. The Redis it starts keeps its data (append-only file) in .run/redis.
# Ctrl-C (or SIGTERM) stops everything it started, in order (below). Settings come from the
# environment (see keras_rest_api/settings.py), e.g.  PORT=9000 MODEL=resnet50 MODEL_WEIGHTS=random ./run.sh
set -euo pipefail
project="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$project"
"$project/scripts/bootstrap.sh"
venv="${VENV:-$project/.venv}"
# Every setting is validated here, before anything starts: one that cannot be used stops
# run.sh with its name and what it expects. (Assigned first: a failure inside a bare
# `eval "$(...)"` would be ignored, and a bad setting would surface as 500s later.)
if ! settings_sh="$("$venv/bin/python" settings.py)"; then
  echo "[run] not starting anything: fix the setting named above (see keras_rest_api/settings.py)" >&2
  exit 2
fi
eval "$settings_sh"
export KEY_PREFIX QUEUE_NAME REDIS_URL PORT HOST REQUEST_TIMEOUT
mkdir -p .run
log() { echo "[run] $*" >&2; }

# Ctrl-C (or SIGTERM) stops the parts in order, so that nothing accepted is lost:
#   1. Apache, gracefully (SIGWINCH to httpd = graceful-stop): it stops accepting
#      connections and its requests in flight are answered (the model server still runs);
#   2. the model server (SIGTERM): it finishes and answers the batch it has claimed;
#   3. Redis, only if this script started it, with SHUTDOWN SAVE (its data lands in .run/redis).
# Each part runs in a session of its own (setsid), so a Ctrl-C in the terminal reaches only
# this script and not every part at once. Each wait is bounded; a part that outlives it is killed.
redis_pid="" model_pid="" apache_pid=""
# serve.sh keeps Apache's files (and httpd.pid) here; both agree on the folder through this.
export APACHE_SERVER_ROOT="${APACHE_SERVER_ROOT:-$project/.run/apache-$PORT}"

# Wait, at most $2 seconds, for process $1 to exit, then SIGKILL its process group (each part
# leads one, from setsid) if it is still there. GNU tail --pid checks 5 times a second whether
# the process lives. (bash's own `wait PID`, called from the signal trap, was seen to miss the
# child's exit and block until some other child ended, so it is not used here.)
wait_bounded() {
  local pid="$1" seconds="$2" what="$3"
  if ! timeout "$seconds" tail --pid="$pid" -s 0.2 -f /dev/null; then
    log "$what did not stop within $seconds s; killing it"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
}

stop_all() {
  # A second Ctrl-C while stopping would cut the ordered stop short; every wait is bounded.
  trap '' INT TERM
  trap - EXIT
  if [ -n "$apache_pid" ] && kill -0 "$apache_pid" 2>/dev/null; then
    log "stopping Apache gracefully (requests in flight are answered first)"
    # SIGWINCH goes to httpd itself: on a terminal, mod_wsgi-express runs httpd under a
    # wrapper process that passes on other signals but swallows SIGWINCH (window resizes).
    httpd_pid="$(cat "$APACHE_SERVER_ROOT/httpd.pid" 2>/dev/null || true)"
    if [ -z "$httpd_pid" ] || ! kill -WINCH "$httpd_pid" 2>/dev/null; then
      kill -TERM "$apache_pid" 2>/dev/null || true
    fi
    # In-flight requests end within REQUEST_TIMEOUT (504 at worst).
    wait_bounded "$apache_pid" "$(( ${REQUEST_TIMEOUT%.*} + 30 ))" "Apache"
  fi
  if [ -n "$model_pid" ] && kill -0 "$model_pid" 2>/dev/null; then
    log "stopping the model server (it answers the batch in hand first)"
    kill -TERM "$model_pid" 2>/dev/null || true
    wait_bounded "$model_pid" 60 "the model server"
  fi
  if [ -n "$redis_pid" ] && kill -0 "$redis_pid" 2>/dev/null; then
    log "stopping redis-server (SHUTDOWN SAVE: its data is kept in .run/redis)"
    # As the admin user, its password through the environment (REDISCLI_AUTH), not the command line.
    tls_cli=(); [ -n "$redis_ca_file" ] && tls_cli=(--tls --cacert "$redis_ca_file")
    REDISCLI_AUTH="$(cat "$redis_admin_password_file")" timeout 30 redis-cli -u "$REDIS_URL" --user "$redis_admin_user" \
      "${tls_cli[@]}" shutdown save >/dev/null 2>&1 || kill -TERM "$redis_pid" 2>/dev/null || true
    wait_bounded "$redis_pid" 30 "redis-server"
  fi
  log "stopped"
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap 'stop_all' EXIT

# Each tier connects to Redis as its own user; with a Redis of your own, set REDIS_USERNAME and
# REDIS_PASSWORD_FILE (see README, "Pointing the tiers at an existing Redis").
web_redis=() model_redis=()
probe=0
if [ -n "${REDIS_SENTINELS:-}" ]; then
  # Behind Sentinel the tiers find the primary themselves and this script starts no Redis; it only
  # checks, through the Sentinels, that a primary answers to these credentials (the reason is above if not).
  "$venv/bin/python" -m keras_rest_api.queue.redis_users probe --wait 10 || exit 1
  probe=sentinels
else
  "$venv/bin/python" -m keras_rest_api.queue.redis_users probe || probe=$?
fi
if [ "$probe" = sentinels ]; then
  log "using the Redis primary that the Sentinels $REDIS_SENTINELS report for $REDIS_SENTINEL_MASTER"
elif [ "$probe" = 0 ]; then
  log "using the Redis already running at $("$venv/bin/python" -c 'from keras_rest_api.queue.redis_users import redact_url; from keras_rest_api.settings import load; print(redact_url(load()["REDIS_URL"]))')"
elif [ "$probe" != 3 ]; then
  exit 1  # it answers but refuses us (the reason is above)
else
  redis_port="$(echo "$REDIS_URL" | sed -E 's#^rediss?://([^@/]*@)?[^:/]+:?([0-9]*).*#\2#')"
  redis_port="${redis_port:-6379}"
  tls=(); case "$REDIS_URL" in rediss://*) tls=(--tls) ;; esac
  mkdir -p .run/redis
  # ACL users and random passwords (kept between runs) in .run/redis-secrets, readable by their
  # tier only; the default user is off, so a client without a password gets nothing.
  eval "$("$venv/bin/python" -m keras_rest_api.queue.redis_users prepare --dir .run/redis-secrets --data-dir .run/redis \
    --port "$redis_port" "${tls[@]}")"
  log "starting redis-server on 127.0.0.1:$redis_port (ACL users ${redis_web_user}, ${redis_model_user}, ${redis_admin_user}${tls:+, TLS only})"
  # The configuration file names the ACL file: no password on any command line.
  setsid redis-server "$redis_conf" &
  redis_pid=$!
  ca=(); [ -n "$redis_ca_file" ] && ca=("REDIS_TLS_CA_FILE=$redis_ca_file")
  web_redis=("REDIS_USERNAME=$redis_web_user" "REDIS_PASSWORD_FILE=$redis_web_password_file" "${ca[@]}")
  model_redis=("REDIS_USERNAME=$redis_model_user" "REDIS_PASSWORD_FILE=$redis_model_password_file" "${ca[@]}")
  env "${ca[@]}" "$venv/bin/python" -m keras_rest_api.queue.redis_users probe --wait 10 --role admin --dir .run/redis-secrets
  # The web tier runs no script of its own: its atomic submit is a function the admin loads here.
  env "${ca[@]}" "$venv/bin/python" -m keras_rest_api.queue.redis_users functions --role admin --dir .run/redis-secrets
fi

log "starting the model server (MODEL=$MODEL)"
setsid env "${model_redis[@]}" "$venv/bin/python" run_model_server.py &
model_pid=$!

log "starting Apache (mod_wsgi daemon mode) on http://$HOST:$PORT"
setsid env "${web_redis[@]}" "$project/apache/serve.sh" &
apache_pid=$!

for _ in $(seq 600); do
  ready="$(curl -s -o /dev/null -w '%{http_code}' "http://$HOST:$PORT/ready" 2>/dev/null || true)"
  if [ "$ready" = 200 ]; then
    log "ready: curl -F image=@samples/chelsea.jpg http://$HOST:$PORT/predict"
    break
  elif [ "$ready" = 401 ]; then  # API keys are on: readiness is for key holders only
    log "up (API keys required): curl -H 'Authorization: Bearer KEY' -F image=@samples/chelsea.jpg http://$HOST:$PORT/predict"
    break
  fi
  for pid in $redis_pid $model_pid $apache_pid; do
    kill -0 "$pid" 2>/dev/null || { log "a component exited during start-up; see the log above"; exit 1; }
  done
  sleep 0.5
done

# Whichever component stops first (a crash, or Ctrl-C), the rest are stopped with it.
status=0
wait -n $redis_pid $model_pid $apache_pid || status=$?
log "a component exited with status $status"
exit "$status"
