#!/usr/bin/env bash
# Removes everything deploy/install.sh installed and puts back what it changed (a Debian mod_wsgi
# it disabled, mod_alias if it enabled it, the model server's user if it created it), then
# reloads Apache if it runs:
#   sudo deploy/uninstall.sh
# The model server is stopped first (it answers the batch it has claimed); Apache's other sites
# keep running (graceful reload, no restart).
set -euo pipefail
conf_dir=/etc/keras-rest-api
log() { echo "[uninstall] $*" >&2; }
[ "$(id -u)" = 0 ] || { echo "run as root: sudo $0" >&2; exit 1; }
state="$conf_dir/installed"
[ -e "$state" ] || log "no $state: removing whatever is left of an install"

# The site goes first, so Apache sends nothing more to a model server that is about to stop.
a2dissite -q keras-rest-api >/dev/null 2>&1 || true
rm -f /etc/apache2/sites-available/keras-rest-api.conf
a2disconf -q zz-keras-rest-api-hardening >/dev/null 2>&1 || true
rm -f /etc/apache2/conf-available/zz-keras-rest-api-hardening.conf
apache_runs=false
if apache2ctl -t >/dev/null 2>&1 && [ -s /run/apache2/apache2.pid ] && kill -0 "$(cat /run/apache2/apache2.pid)" 2>/dev/null; then
  apache_runs=true
  apache2ctl graceful
fi

if [ -d /run/systemd/system ] && [ -e /etc/systemd/system/keras-model-server@.service ]; then
  systemctl disable --now 'keras-model-server@*' >/dev/null 2>&1 || true
  rm -f /etc/systemd/system/keras-model-server@.service
  systemctl daemon-reload
fi
if [ -e /etc/init.d/keras-model-server ]; then
  /etc/init.d/keras-model-server stop >/dev/null || true
  rm -f /etc/init.d/keras-model-server
  update-rc.d keras-model-server remove >/dev/null 2>&1 || true
fi

a2dismod -q wsgi_venv >/dev/null 2>&1 || true
rm -f /etc/apache2/mods-available/wsgi_venv.load
if [ -e "$state" ]; then
  grep -q '^enabled_mod=alias$' "$state" && { a2dismod -q -f alias >/dev/null 2>&1 || true; }
  grep -q '^disabled_mod=wsgi$' "$state" && { a2enmod -q wsgi >/dev/null 2>&1 || true; }
  # The model server has stopped (above), so its user owns no process any more.
  created_user="$(sed -n 's/^created_user=//p' "$state")"
  if [ -n "$created_user" ] && id -u "$created_user" >/dev/null 2>&1; then
    userdel "$created_user" || log "warning: could not remove the user $created_user"
    getent group "$created_user" >/dev/null && { groupdel "$created_user" 2>/dev/null || true; }
  fi
fi
rm -rf "$conf_dir" /var/cache/keras-rest-api /var/log/keras-rest-api
if $apache_runs; then
  # Unloading a module takes a graceful restart; the other sites stay up throughout.
  apache2ctl graceful
fi
log "removed"
