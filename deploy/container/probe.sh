#!/bin/sh
# Health probes of the web tier, from inside its container (HEALTHCHECK, compose, Kubernetes):
#   probe.sh health   liveness: the web process answers (GET /health, public, touches no Redis)
#   probe.sh ready    readiness: Redis reachable and a model ready (GET /ready). With API keys on,
#                     /ready is for key holders: the key named "probe" in API_KEYS_FILE is sent.
set -eu
url="http://127.0.0.1:${PORT:-8000}"
case "${1:-health}" in
  health) exec curl -fsS -o /dev/null --max-time 3 "$url/health" ;;
  ready)
    key=""
    if [ -n "${API_KEYS_FILE:-}" ] && [ -r "$API_KEYS_FILE" ]; then
      key="$(sed -n 's/^[[:space:]]*probe[[:space:]]*:[[:space:]]*//p' "$API_KEYS_FILE" | head -n 1 | tr -d '[:space:]')"
    fi
    if [ -n "$key" ]; then
      # The key through a header file on stdin, not the command line (visible in ps).
      # (No exec here: the last command of a pipeline runs in a subshell, and exec would
      # replace only that, then fall through to the keyless request below.)
      printf 'Authorization: Bearer %s\n' "$key" | curl -fsS -o /dev/null --max-time 4 -H @- "$url/ready"
      exit
    fi
    exec curl -fsS -o /dev/null --max-time 4 "$url/ready" ;;
  *) echo "usage: probe.sh health|ready" >&2; exit 2 ;;
esac
