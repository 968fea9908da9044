"""Which request bodies the web tier reads at all, checked before any byte of a body is read.

Only what an upload can come as is parsed: multipart/form-data (a form with the file), a raw
image/* body, application/octet-stream, or application/json (a features model's instances,
parsed by web.features within MAX_JSON_BYTES). Anything else, application/x-www-form-urlencoded
above all (Werkzeug parses it into memory at about 22 bytes per byte sent), is answered 415 from
the headers alone. The Open Inference Protocol routes under /v2 have body types of their own
(JSON, binary tensors) and do their own checks, so they are left alone here.
"""
from __future__ import annotations

from flask import request

from keras_rest_api.errors import UnsupportedMediaType, clip

# Body types this tier parses (besides image/*).
PARSED_TYPES = ("multipart/form-data", "application/octet-stream", "application/json")
# Paths whose routes check their own body types.
OWN_BODY_TYPES_PREFIXES = ("/v2/", "/v2")


def refuse_unparsed_bodies() -> None:
    """Flask before_request hook: 415 for a body this tier would not parse, before reading it."""
    if request.path.startswith(OWN_BODY_TYPES_PREFIXES):
        return
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if not chunked and not request.content_length:
        return
    check_upload_type(request.mimetype)


def read_at_most(count: int) -> bytes:
    """Up to `count` bytes of the request body, however the server hands it over: one read of a
    streamed (chunked) body may return fewer bytes than asked, so it is read until `count` or the end."""
    chunks, size = [], 0
    while size < count:
        chunk = request.stream.read(min(1 << 20, count - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def check_upload_type(mimetype: str) -> None:
    """UnsupportedMediaType unless `mimetype` is one an upload may come as."""
    if mimetype in PARSED_TYPES or mimetype.startswith("image/"):
        return
    shown = clip(mimetype) if mimetype else "'(none)'"
    raise UnsupportedMediaType(
        f"Unsupported Content-Type {shown}. Send multipart/form-data with a field "
        "'image' (curl -F image=@dog.jpg), or the raw image bytes with Content-Type image/* or "
        "application/octet-stream; a features model takes application/json."
    )
