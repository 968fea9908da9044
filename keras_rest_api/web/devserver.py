"""The development web server: the same app as under Apache, on gevent's WSGI server.

`python run_web_server.py` in a checkout, or `keras-web-dev-server` where the package is
installed. Production runs the app through Apache + mod_wsgi (keras_rest_api_app.wsgi).
"""
from __future__ import annotations

import logging

from keras_rest_api import settings
from keras_rest_api.web.app import create_app

log = logging.getLogger("web")


def main() -> int:
    """Serve until interrupted, on HOST:PORT from the settings."""
    # Cooperative sockets must be in place before redis-py creates any; gevent only here, so
    # that Apache's daemons never load it.
    from gevent import monkey

    monkey.patch_all()
    from gevent.pywsgi import WSGIServer

    config = settings.start(log)
    if config is None:
        return 2
    app = create_app(config)
    log.info("serving on http://%s:%d (development server; use Apache in production)", config["HOST"], config["PORT"])
    WSGIServer((config["HOST"], config["PORT"]), app, log=None).serve_forever()
    return 0
