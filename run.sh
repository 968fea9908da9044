#!/usr/bin/env bash
# Runs the whole system in the foreground on 127.0.0.1:$PORT (default 8000): Redis (unless one
# already answers at REDIS_URL), the model server, and Apache with mod_wsgi in daemon mode.
# Ctrl-C (or SIGTERM) stops everything it started. Settings come from the environment (see
# settings.py), e.g.  PORT=9000 MODEL=resnet50 MODEL_WEIGHTS=random ./run.sh
set -euo pipefail
project="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$project"
"$project/scripts/bootstrap.sh"
venv="${VENV:-$project/.venv}"
eval "$("$venv/bin/python" settings.py)"
export KEY_PREFIX QUEUE_NAME REDIS_URL PORT HOST
mkdir -p .run
log() { echo "[run] $*" >&2; }

children=()
stop_all() {
  trap - INT TERM EXIT
  log "stopping"
  for pid in "${children[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${children[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap 'stop_all' EXIT

if redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1; then
  log "using the Redis already running at $REDIS_URL"
else
  redis_port="$(echo "$REDIS_URL" | sed -E 's#^redis://([^@/]*@)?[^:/]+:?([0-9]*).*#\2#')"
  redis_port="${redis_port:-6379}"
  mkdir -p .run/redis
  log "starting redis-server on 127.0.0.1:$redis_port"
  # hz 100: Redis ends blocking waits (the batch window) to within 10 ms.
  redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$project/.run/redis" \
    --save "" --appendonly no --hz 100 --loglevel warning &
  children+=($!)
  for _ in $(seq 50); do redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

log "starting the model server (MODEL=$MODEL)"
"$venv/bin/python" run_model_server.py &
children+=($!)

log "starting Apache (mod_wsgi daemon mode) on http://$HOST:$PORT"
"$project/apache/serve.sh" &
children+=($!)

for _ in $(seq 600); do
  if curl -fs "http://$HOST:$PORT/ready" >/dev/null 2>&1; then
    log "ready: curl -F image=@dog.jpg http://$HOST:$PORT/predict"
    break
  fi
  for pid in "${children[@]}"; do
    kill -0 "$pid" 2>/dev/null || { log "a component exited during start-up; see the log above"; exit 1; }
  done
  sleep 0.5
done

# Whichever component stops first (a crash, or Ctrl-C), the rest are stopped with it.
status=0
wait -n "${children[@]}" || status=$?
log "a component exited with status $status"
exit "$status"
