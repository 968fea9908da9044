"""WSGI entry point that Apache's mod_wsgi loads (see apache/)."""
import os
import sys

# mod_wsgi does not put the script's folder on the path; the app's modules live beside it.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers import configure_logging, keep_freed_memory  # noqa: E402
import settings  # noqa: E402

configure_logging(settings.LOG_LEVEL)
keep_freed_memory(settings.MALLOC_KEEP_BYTES)

from run_web_server import create_app  # noqa: E402

application = create_app()
