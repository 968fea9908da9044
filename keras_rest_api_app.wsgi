"""WSGI entry point that Apache's mod_wsgi loads (see apache/)."""
import os
import sys

# mod_wsgi does not put the script's folder on the path; the app's modules live beside it.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers import configure_logging  # noqa: E402
import settings  # noqa: E402
from decode_budget import set_malloc_policy  # noqa: E402

configure_logging(settings.LOG_LEVEL)
# Before the app's imports, not only in create_app (which sets the same again for other entry
# points): set this late, the daemons paid 2-10 page faults per request instead of under 1.
set_malloc_policy(settings.MALLOC_KEEP_BYTES)

from run_web_server import create_app  # noqa: E402

application = create_app()
