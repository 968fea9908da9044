"""The service's errors: each carries the HTTP status it is answered with.

Every part raises these (or lets a `redis.RedisError` through), and one table in
`keras_rest_api.web.errors` renders them for every route family: the `/predict` family's
`{"success": false, "error": ...}` and the Open Inference Protocol's `{"error": ...}` are two
shapes of the same answer, so no route can tell a client more than another does.

A message says what was expected, what was received and how to fix it; it is shown to the
client, so it never holds addresses, users, exception texts or other internals.
"""
from __future__ import annotations

import reprlib

__all__ = [
    "ServiceError", "BadRequest", "ProtocolError", "ImageError", "NotFound", "ModelNotFound",
    "ImageTooLarge", "RequestTooLarge", "UnsupportedMediaType", "ServiceUnavailable", "NoModelServer",
    "BadGateway", "GatewayTimeout", "InvalidInstances", "clip", "CLIP_CHARS",
]

# How much of a client-supplied value a message or log line shows: enough to recognise it, too
# little for a client to grow an answer or the log with what it sends.
CLIP_CHARS = 40


def clip(value: object, limit: int = CLIP_CHARS) -> str:
    """`value` as `repr` shows it, cut to about `limit` characters: every client-supplied value in
    an error message or a log line goes through this.

    Containers, strings and numbers are cut while they are rendered (reprlib), so a huge list,
    string or integer costs O(limit) here, not O(its size).
    """
    try:
        shown = _CLIPPER.repr(value)
    except (ValueError, RecursionError):  # an int past str()'s digit limit
        return f"<{type(value).__name__}>"
    return shown if len(shown) <= limit else shown[:limit] + "..."


def _clipper() -> reprlib.Repr:
    clipper = reprlib.Repr()
    clipper.maxlevel, clipper.maxlist, clipper.maxtuple, clipper.maxdict = 3, 8, 8, 4
    clipper.maxstring = clipper.maxother = clipper.maxlong = CLIP_CHARS
    return clipper


_CLIPPER = _clipper()


class ServiceError(Exception):
    """An answer other than success: `status` is its HTTP status, `headers` its extra headers."""

    status = 500

    def __init__(self, message: str = "", status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status

    @property
    def headers(self) -> dict[str, str]:
        return {}

    @property
    def details(self) -> dict[str, object]:
        """More fields of the JSON answer, beside its message."""
        return {}


class BadRequest(ServiceError, ValueError):
    """The request is malformed or asks for something out of range: 400."""

    status = 400


class ProtocolError(BadRequest):
    """An Open Inference Protocol request this service cannot answer (400 unless given)."""


class InvalidInstances(BadRequest):
    """Instances for a features model with fields that do not fit its contract: 400, every
    problem listed (`errors`: instance, field, problem, message), so one answer fixes them all."""

    def __init__(self, message: str, errors: list[dict[str, object]]) -> None:
        super().__init__(message)
        self.errors = errors

    @property
    def details(self) -> dict[str, object]:
        return {"errors": self.errors}


class ImageError(BadRequest):
    """An upload that cannot be classified (not an image, corrupt, bad geometry): 400."""


class NotFound(ServiceError):
    status = 404


class ModelNotFound(NotFound):
    """The request names a model or version no live model server serves: 404."""


class ImageTooLarge(ImageError):
    """An image whose pixels or decode would exceed the limits: 413."""

    status = 413


class RequestTooLarge(BadRequest):
    """A request body (or its JSON part) larger than this service parses: 413."""

    status = 413


class UnsupportedMediaType(ImageError):
    """A body of a type the route does not parse: 415."""

    status = 415


class ServiceUnavailable(ServiceError):
    """Answered with 503 and Retry-After: the client should try again shortly."""

    status = 503

    def __init__(self, message: str = "", retry_after: int | None = None) -> None:
        super().__init__(message)
        # None: the service's RETRY_AFTER_SECONDS, filled in when the answer is rendered.
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}


class NoModelServer(ServiceUnavailable):
    """Nothing can answer yet (no model server, or the model is still loading): 503."""


class BadGateway(ServiceError):
    """A model server answered something this web tier cannot use: 502."""

    status = 502


class GatewayTimeout(ServiceError):
    """No answer from the model within the request's deadline: 504."""

    status = 504
