"""The one table that turns every error into an HTTP answer, for every route.

Each route family renders the same error in its own shape: the `/predict` family (and every
route outside /v2) as `{"success": false, "error": ...}`, the Open Inference Protocol under /v2
as `{"error": ...}`. Status, message, headers and what is logged are decided here once, so no
route can disclose what another hides: a Redis failure's text (addresses, users) and an
unexpected exception stay in the log for every route.
"""
from __future__ import annotations

import logging
from typing import Callable, Mapping

import redis
from flask import Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from keras_rest_api.errors import ServiceError, ServiceUnavailable

log = logging.getLogger("web.errors")

V2_PREFIX = "/v2"


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None,
                   details: Mapping[str, object] | None = None) -> tuple[Response, int]:
    """The answer for an error in the shape of the route family the request is in (with the
    error's `details`, such as each field error of a features request)."""
    response = jsonify(error=message, **(details or {})) if _is_v2() else \
        jsonify(success=False, error=message, **(details or {}))
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response, status


def _is_v2() -> bool:
    return request.path == V2_PREFIX or request.path.startswith(V2_PREFIX + "/")


def _retry_after() -> dict[str, str]:
    return {"Retry-After": str(current_app.config["RETRY_AFTER_SECONDS"])}


def service_error(exc: ServiceError) -> tuple[Response, int]:
    headers = dict(exc.headers)
    if isinstance(exc, ServiceUnavailable):
        headers = {**_retry_after(), **headers}
    level = logging.WARNING if exc.status >= 500 else logging.INFO
    log.log(level, "request %s: %d: %s", g.get("request_id"), exc.status, exc)
    return error_response(exc.status, str(exc), headers, exc.details)


# Every route's answer to any Redis failure; what failed, and how, is in the log only.
REDIS_UNAVAILABLE = "The queue (Redis) is unavailable. Retry shortly."
REDIS_FULL = "The queue (Redis) is out of memory for new requests. Retry shortly."


def log_redis_error(exc: redis.RedisError) -> None:
    """The log line for a Redis failure (the client's answer says only REDIS_UNAVAILABLE)."""
    log.error("request %s: Redis error: %s: %s", g.get("request_id"), type(exc).__name__, exc)


def redis_unavailable(exc: redis.RedisError) -> tuple[Response, int]:
    log_redis_error(exc)
    current_app.extensions["served"].forget()
    # The exception's text (addresses, users) stays in the log.
    return error_response(503, REDIS_UNAVAILABLE, _retry_after())


def redis_full(exc: redis.OutOfMemoryError) -> tuple[Response, int]:
    # Redis at maxmemory (noeviction) refused the write: nothing accepted was dropped, this
    # request was not accepted; requests in flight drain the queue and free memory.
    log.warning("request %s: Redis refused a write for memory (maxmemory): %s", g.get("request_id"), exc)
    return error_response(503, REDIS_FULL, _retry_after())


def http_error(exc: HTTPException) -> tuple[Response, int]:
    status = exc.code or 500
    if status == 413:
        limit = current_app.config["MAX_UPLOAD_BYTES"]
        message = (f"The request is larger than {limit} bytes. Send fewer or smaller images." if _is_v2() else
                   f"The upload is larger than {limit} bytes. Send a smaller image.")
        return error_response(413, message)
    return error_response(status, exc.description or exc.name)


def unexpected(exc: Exception) -> tuple[Response, int]:
    log.exception("request %s: unexpected error", g.get("request_id"))
    return error_response(500, f"Internal error (request id {g.get('request_id')}); the log has the details.")


HANDLERS: dict[type[BaseException], Callable[..., tuple[Response, int]]] = {
    ServiceError: service_error,
    redis.OutOfMemoryError: redis_full,
    redis.RedisError: redis_unavailable,
    HTTPException: http_error,
    Exception: unexpected,
}


def register(app: Flask) -> None:
    """Render every error of `app`, whichever route raised it, through the table above."""
    for exception, handler in HANDLERS.items():
        app.register_error_handler(exception, handler)
