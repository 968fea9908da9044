#!/bin/sh
# Redis for the containers: Debian's redis-server with the service's ACL users (the default
# user off; web, model_server and admin, each limited to its own commands and keys), their
# passwords from the secrets mounted in /run/secrets (REDIS_SECRETS_DIR), persistence in /data
# (an append-only file and snapshots). Runs as the image's `redis` user.
set -eu
secrets="${REDIS_SECRETS_DIR:-/run/secrets}"
work="$(mktemp -d)"
for role in web model_server admin; do
  source="$secrets/redis_${role}_password"
  [ -r "$source" ] || { echo "redis.sh: $source is missing or unreadable; mount the $role password there" >&2; exit 2; }
  cp "$source" "$work/$role.password"
done
# prepare hashes the passwords into users.acl (no password is left in redis.conf or argv).
eval "$(APACHE_GROUP="$(id -gn)" keras-rest-api-redis-users prepare --dir "$work" --data-dir /data \
  --port "${REDIS_PORT:-6379}" --bind 0.0.0.0)"
# The tiers FCALL the queue's function library (keras_rest_api/queue/functions.py): the admin
# user loads it once Redis answers (the append-only file keeps it too). Redis runs as a child so
# that this can happen after it starts; TERM and INT are passed on to it.
redis-server "$redis_conf" --appendonly yes --appendfsync everysec --save "300 1 60 1000" \
  --loglevel notice --bind "0.0.0.0 -::*" &
redis_pid=$!
trap 'kill -TERM "$redis_pid" 2>/dev/null' TERM INT
export REDIS_URL="redis://127.0.0.1:${REDIS_PORT:-6379}/0"
if ! keras-rest-api-redis-users probe --wait 30 --role admin --dir "$work" >/dev/null \
   || ! keras-rest-api-redis-users functions --role admin --dir "$work"; then
  echo "redis.sh: could not load the queue's functions into Redis; stopping it" >&2
  kill -TERM "$redis_pid" 2>/dev/null
fi
rm -f "$work"/*.password
set +e
wait "$redis_pid"
status=$?
# A trapped signal ends the first wait at once: wait again for Redis to finish writing its file.
wait "$redis_pid" 2>/dev/null
exit "$status"
