"""One log format for every process of the service (web daemons, model servers, tools)."""
from __future__ import annotations

import logging


def configure_logging(level: str) -> None:
    """Log to stderr: time, level, logger, message; `level` is a name such as INFO or DEBUG."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
