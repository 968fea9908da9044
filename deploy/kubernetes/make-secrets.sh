#!/bin/sh
# Prints the two Secrets the manifests use, from the files deploy/compose-secrets.sh generates
# (random passwords for the Redis users, API keys), for `kubectl apply -f -`:
#   deploy/kubernetes/make-secrets.sh | kubectl apply -f -
# (or make them with your secrets manager: redis-users with keys redis_web_password,
# redis_model_server_password, redis_admin_password and
# redis_model_server_username; api-keys with key api_keys, `name:key` lines).
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
dir="$("$here/../compose-secrets.sh" "${1:-$here/../secrets}")"
b64() { base64 -w0 < "$1"; }
cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: redis-users
  labels: {app.kubernetes.io/part-of: keras-rest-api}
type: Opaque
data:
  redis_web_password: $(b64 "$dir/redis_web_password")
  redis_model_server_password: $(b64 "$dir/redis_model_server_password")
  redis_admin_password: $(b64 "$dir/redis_admin_password")
  redis_model_server_username: $(printf model_server | base64 -w0)
---
apiVersion: v1
kind: Secret
metadata:
  name: api-keys
  labels: {app.kubernetes.io/part-of: keras-rest-api}
type: Opaque
data:
  api_keys: $(b64 "$dir/api_keys")
YAML
