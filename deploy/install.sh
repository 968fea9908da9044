#!/usr/bin/env bash
# Installs the vhost into Debian's system Apache, using the mod_wsgi built into the project's
# venv (it matches the venv's Python). Run as root from the project directory, after
# ./run.sh or scripts/bootstrap.sh has made the venv. The vhost expects the project at
# /srv/keras-rest-api: pass another path as $1 and the vhost is rewritten to match.
set -euo pipefail
project="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${1:-/srv/keras-rest-api}"
[ "$(id -u)" = 0 ] || { echo "run as root (sudo $0)" >&2; exit 1; }
if [ "$target" != "$project" ] && [ ! -e "$target" ]; then
  ln -s "$project" "$target"
fi
"$project/.venv/bin/mod_wsgi-express" module-config | grep -v '^WSGIPythonHome' > /etc/apache2/mods-available/wsgi_venv.load
a2dismod -q wsgi >/dev/null 2>&1 || true
a2enmod -q wsgi_venv alias >/dev/null
sed "s#/srv/keras-rest-api#$target#g" "$project/apache/keras-rest-api.conf" > /etc/apache2/sites-available/keras-rest-api.conf
a2dissite -q 000-default >/dev/null 2>&1 || true
a2ensite -q keras-rest-api >/dev/null
apache2ctl configtest
echo "installed; now: sudo service apache2 restart  (and start the model server: see README)"
