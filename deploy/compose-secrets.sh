#!/bin/sh
# The secrets deploy/docker-compose.yml mounts, generated once into deploy/secrets/ (or $1):
# a random password for each Redis user (web, model_server, admin) and the API keys file
# (`client:KEY` for your clients, `probe:KEY` for the web tier's own readiness check). Existing
# files are kept, so running tiers stay valid. The folder is 0700: only you read it; each
# container sees only the secrets its service names (mounted read-only in /run/secrets).
#   deploy/compose-secrets.sh && docker compose -f deploy/docker-compose.yml up -d --build
set -eu
dir="${1:-$(cd "$(dirname "$0")" && pwd)/secrets}"
mkdir -p "$dir" && chmod 700 "$dir"
random() { head -c 32 /dev/urandom | base64 | tr -d '/+=\n' | cut -c1-40; }
for name in redis_web_password redis_model_server_password redis_admin_password; do
  [ -s "$dir/$name" ] || (umask 022; random > "$dir/$name")
done
[ -s "$dir/api_keys" ] || (umask 022; printf 'client:%s\nprobe:%s\n' "$(random)" "$(random)" > "$dir/api_keys")
# Readable inside the containers, whose users are not you (the folder keeps others out here).
chmod 444 "$dir"/*
echo "$dir"
