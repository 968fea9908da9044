"""What both tiers share besides the queue protocol (see protocol.py): ids, names, logging."""
from __future__ import annotations

import logging
import os
import re
import socket
import uuid

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_JOB_ID = re.compile(r"[0-9a-f]{32}")


def new_request_id() -> str:
    """A fresh id for one request, safe to use in Redis keys and log lines."""
    return uuid.uuid4().hex


def is_valid_job_id(value: str) -> bool:
    """Whether `value` has the form of the ids `new_request_id` makes (for GET /result/<id>)."""
    return _JOB_ID.fullmatch(value) is not None


def is_valid_request_id(value: str) -> bool:
    """Whether a client-supplied X-Request-ID can be trusted in keys and logs."""
    return _REQUEST_ID.fullmatch(value) is not None


def default_server_name() -> str:
    """`host:pid`, unique enough to name one model server among several on shared Redis."""
    return f"{socket.gethostname()}:{os.getpid()}"


def configure_logging(level: str) -> None:
    """One log format for both tiers: time, level, logger, message."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
