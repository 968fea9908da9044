"""Ids and names both tiers make and check: request and job ids, model server names."""
from __future__ import annotations

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
