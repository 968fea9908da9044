"""What both tiers share: request ids, Redis key names, and the wire format of jobs and results.

A job travels as a Redis stream entry whose `pixels` field holds the image as compact uint8
RGB bytes (224x224x3 = 147 KB), not the tutorial's base64 float32 JSON (803 KB). A result
travels as JSON pushed onto a list that only its own request waits on.
"""
from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

WIRE_VERSION = b"1"
# Bucket bounds (seconds) of the inference-time histogram model servers publish with heartbeats.
INFERENCE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
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


@dataclass(frozen=True)
class Keys:
    """Names of every Redis key the service uses, under one prefix."""

    prefix: str
    queue_name: str

    @property
    def queue(self) -> str:
        return f"{self.prefix}:queue:{self.queue_name}"

    def result(self, job_id: str) -> str:
        return f"{self.prefix}:result:{job_id}"

    def pending(self, job_id: str) -> str:
        """Marks a job whose result may be fetched later (GET /result) as known and unfinished."""
        return f"{self.prefix}:job:{job_id}"

    @property
    def servers(self) -> str:
        return f"{self.prefix}:servers:{self.queue_name}"

    def server(self, name: str) -> str:
        return f"{self.prefix}:server:{self.queue_name}:{name}"


@dataclass
class Job:
    """One image waiting to be classified."""

    id: str
    pixels: np.ndarray  # uint8, (height, width, 3)
    top_k: int
    deadline: float  # epoch seconds after which nobody waits for the answer
    enqueued_at: float = field(default_factory=time.time)
    # Fetched later through GET /result: an expired job is answered, not silently dropped.
    fetch_later: bool = False
    request_id: str = ""


class WireFormatError(ValueError):
    """A queue entry that this version cannot read."""


def encode_job(job: Job) -> dict[str, bytes]:
    """Stream fields for `job`; the pixels go as raw bytes."""
    pixels = np.ascontiguousarray(job.pixels, dtype=np.uint8)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected pixels of shape (height, width, 3), received {pixels.shape}")
    height, width, _ = pixels.shape
    return {
        "v": WIRE_VERSION,
        "id": job.id.encode(),
        "shape": f"{height},{width}".encode(),
        "top_k": str(job.top_k).encode(),
        "deadline": repr(job.deadline).encode(),
        "enqueued_at": repr(job.enqueued_at).encode(),
        "later": b"1" if job.fetch_later else b"0",
        "rid": job.request_id.encode(),
        "pixels": pixels.tobytes(),
    }


def decode_job(fields: Mapping[bytes, bytes]) -> Job:
    """The `Job` in a stream entry's fields; WireFormatError if they are not a valid job."""
    try:
        if fields[b"v"] != WIRE_VERSION:
            raise WireFormatError(f"wire version {fields[b'v']!r}, expected {WIRE_VERSION!r}")
        height, width = (int(n) for n in fields[b"shape"].split(b","))
        pixels = np.frombuffer(fields[b"pixels"], dtype=np.uint8).reshape(height, width, 3)
        return Job(
            id=fields[b"id"].decode(),
            pixels=pixels,
            top_k=int(fields[b"top_k"]),
            deadline=float(fields[b"deadline"]),
            enqueued_at=float(fields[b"enqueued_at"]),
            fetch_later=fields.get(b"later") == b"1",
            request_id=fields.get(b"rid", b"").decode(),
        )
    except WireFormatError:
        raise
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise WireFormatError(f"malformed job entry: {type(exc).__name__}: {exc}") from None


def encode_result(result: Mapping[str, Any]) -> bytes:
    """A result as compact JSON bytes."""
    return json.dumps(result, separators=(",", ":")).encode()


def decode_result(data: bytes) -> dict[str, Any]:
    """The result dict from its JSON bytes."""
    return json.loads(data)


def success_result(predictions: list[dict[str, Any]], timing: Mapping[str, float]) -> dict[str, Any]:
    """The model server's answer for one image."""
    return {"success": True, "predictions": predictions, "timing": dict(timing)}


def error_result(message: str, status: int, timing: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The model server's failure answer for one image, with the HTTP status the client should get."""
    return {"success": False, "error": message, "status": status, "timing": dict(timing or {})}


def configure_logging(level: str) -> None:
    """One log format for both tiers: time, level, logger, message."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
