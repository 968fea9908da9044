"""What mod_wsgi serves: the app built from the settings in the environment.

`keras_rest_api_app.wsgi` (the card's WSGI script, which Apache loads) takes `application`
from `load_application()`. `python -m keras_rest_api.wsgi` builds the same app and exits 2 with
the reason when it cannot be built: apache/serve.sh runs it as the daemons' user before Apache
starts, so that a setting or a file the app refuses (an API_KEYS_FILE that user cannot read)
stops the start with one line, instead of Apache answering 500 to every request.
"""
from __future__ import annotations

import logging
import sys

from flask import Flask

from keras_rest_api import settings
from keras_rest_api.imaging.budget import set_malloc_policy
from keras_rest_api.logs import configure_logging
from keras_rest_api.web.app import create_app


log = logging.getLogger("web.wsgi")


def load_application() -> Flask:
    """The web tier's app for this daemon process. A setting that cannot be used raises
    SettingError, after one log line naming it: mod_wsgi then loads no app at all, rather than
    one that answers 500 to every request."""
    try:
        config = settings.load()
    except settings.SettingError as exc:
        configure_logging("INFO")
        log.error("refusing to load the web tier: %s", exc)
        raise
    configure_logging(config["LOG_LEVEL"])
    # Set before the first request is parsed, not only in create_app: set late, the daemons
    # paid 2-10 page faults per request instead of under 1.
    set_malloc_policy(config["MALLOC_KEEP_BYTES"])
    return create_app(config)


def check() -> int:
    """Build the app from the environment's settings once; 0 when it can be, else 2 and the reason."""
    try:
        create_app(settings.load())
    except (ValueError, OSError) as exc:  # SettingError, ApiKeyError and RedisSecurityError are ValueErrors
        print(f"web tier: cannot start: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(check())
