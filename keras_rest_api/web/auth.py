"""Client API keys (`Authorization: Bearer <key>`) and the security headers of every answer.

Keys are configured as `name:key` pairs, in API_KEYS (comma-separated) and/or API_KEYS_FILE
(one pair per line; `#` comments; for secrets managers that mount a file). When any is
configured, every route except liveness and the public files of the pages (the HTML, CSS and
JavaScript of / and /docs, Swagger UI's files and the OpenAPI document they render; they hold no
data, and the page asks for the key itself) needs a valid key, and a request without one gets 401
with `WWW-Authenticate: Bearer` and a JSON error. The key's name (never the key) goes into the
access log line and the `kras_http_requests_by_client_total` metric, whose label values are the
configured names plus "rejected", so their number is bounded.

Nothing configured means the API is open; the web tier warns at start when it then listens beyond
loopback. `install(app)` is the one call create_app makes.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from typing import Any, Callable, Mapping

from flask import Flask, Response, current_app, g, jsonify, request

# The key format is parsed where the settings are validated too (keras_rest_api.settings).
from keras_rest_api.api_keys import ApiKeyError, parse_api_keys

log = logging.getLogger("web.auth")
access_log = logging.getLogger("web.access")

# Liveness must answer without a key: orchestrators probe it without credentials.
LIVENESS_PATHS = frozenset({"/health", "/v2/health/live"})
REJECTED = "rejected"


class ApiKeys:
    """The configured keys; `identify` says whose a presented key is."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        if len(set(keys.values())) != len(keys):
            raise ApiKeyError("The same API key is configured under two names; each client needs its own key.")
        # Compared as SHA-256 digests: equal lengths, so compare_digest takes the same time for any input.
        self._digests = [(name, hashlib.sha256(key.encode()).digest()) for name, key in keys.items()]
        self.names = frozenset(keys)
        # Who owns what a key creates (asynchronous jobs), as stored beside it in Redis: a hash of
        # the key's digest, so neither the key nor a way to test guesses of it is stored.
        self._owners = {name: hashlib.sha256(b"kras-job-owner:" + digest).hexdigest()[:32]
                        for name, digest in self._digests}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ApiKeys | None:
        """The keys in API_KEYS and API_KEYS_FILE, or None when neither is set."""
        keys = parse_api_keys(str(config.get("API_KEYS") or ""), "API_KEYS")
        path = str(config.get("API_KEYS_FILE") or "")
        if path:
            try:
                with open(path, encoding="utf-8") as handle:
                    text = handle.read()
            except OSError as exc:
                raise ApiKeyError(f"API_KEYS_FILE {path!r} cannot be read ({type(exc).__name__}: {exc.strerror}); "
                                  "expected a file of `name:key` lines readable by the web tier's user.") from None
            from_file = parse_api_keys(text, f"API_KEYS_FILE {path!r}")
            for name in set(keys) & set(from_file):
                raise ApiKeyError(f"The API key name {name!r} is in both API_KEYS and API_KEYS_FILE; keep one.")
            keys.update(from_file)
        if (config.get("API_KEYS") or path) and not keys:
            raise ApiKeyError("API_KEYS or API_KEYS_FILE is set but holds no `name:key` pair.")
        return cls(keys) if keys else None

    def owner_tag(self, name: str) -> str:
        """The owner tag of key `name` (see __init__)."""
        return self._owners[name]

    def identify(self, presented: str) -> str | None:
        """The name of the key `presented`, or None; every key is compared, whatever matches."""
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        found = None
        for name, expected in self._digests:
            if hmac.compare_digest(digest, expected):
                found = name
        return found


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def install(app: Flask) -> None:
    """Check API keys before every request (after the request id is set) and add security headers."""
    keys = ApiKeys.from_config(app.config)
    app.extensions["api_keys"] = keys
    if keys is None:
        if not _is_loopback(str(app.config.get("HOST", ""))):
            log.warning("API keys are off and the server listens on %s: anyone who can reach it can use it. "
                        "Set API_KEYS or API_KEYS_FILE (name:key pairs) to require a key.", app.config.get("HOST"))
    else:
        log.info("API keys required (%d configured: %s)", len(keys.names), ", ".join(sorted(keys.names)))
    app.before_request(_authenticate)
    app.after_request(_finish)


def allow_without_key(app: Flask, endpoint: str, when: Callable[[], bool] | None = None) -> None:
    """Let `endpoint` answer without a key (only while `when()` is true, if given).

    Only for files that are the same for everyone and hold no data (a page's HTML, CSS, JS): a
    browser must load them before the page can ask its user for a key.
    """
    app.extensions.setdefault("public_endpoints", {})[endpoint] = when


def _is_public() -> bool:
    if request.path in LIVENESS_PATHS:
        return True
    public: dict[str, Callable[[], bool] | None] = current_app.extensions.get("public_endpoints", {})
    # request.endpoint is None when routing failed (404, 405): those need a key like any route.
    if request.endpoint not in public or request.method not in ("GET", "HEAD"):
        return False
    when = public[request.endpoint]
    return when is None or when()


def owner() -> str:
    """The owner tag of this request's key ("" when keys are off: jobs then belong to anyone)."""
    return g.get("api_owner") or ""


def is_authenticated() -> bool:
    """Whether this request presented a valid API key (always False when keys are off)."""
    return g.get("api_client") is not None


def _authenticate() -> tuple[Response, int] | None:
    keys: ApiKeys | None = current_app.extensions.get("api_keys")
    g.api_client = None
    g.public_route = _is_public()
    if keys is None or g.public_route:
        return None
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    name = keys.identify(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
    if name is not None:
        g.api_client = name
        g.api_owner = keys.owner_tag(name)
        return None
    g.api_client_rejected = True
    presented = bool(token.strip())
    response = jsonify(success=False, error=(
        "The API key is not valid. Send a configured key as `Authorization: Bearer <key>`." if presented else
        "An API key is required. Send it as `Authorization: Bearer <key>` "
        "(e.g. curl -H 'Authorization: Bearer <key>' ...)."))
    challenge = 'Bearer realm="keras-rest-api"'
    response.headers["WWW-Authenticate"] = challenge + (', error="invalid_token"' if presented else "")
    return response, 401


# Headers that cost nothing and close doors: no MIME sniffing of JSON into HTML, no framing, no
# referrer leaks. JSON answers also get a CSP that allows nothing; HTML pages set their own.
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
_NON_HTML_CSP = "default-src 'none'; frame-ancestors 'none'"


def _finish(response: Response) -> Response:
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if response.mimetype != "text/html":
        response.headers.setdefault("Content-Security-Policy", _NON_HTML_CSP)
    # An earlier before_request hook may have answered before _authenticate ran: decide again then.
    public = g.public_route if "public_route" in g else _is_public()
    if current_app.extensions.get("api_keys") is not None and not public:
        client = g.get("api_client") or REJECTED
        current_app.extensions["metrics"].count_client(client)
        # Answers to key holders are theirs alone: no shared cache may keep them.
        response.headers.setdefault("Cache-Control", "no-store")
        # The route's pattern, not the raw path: bounded, and no client-chosen text in the log.
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        access_log.info("%s %s %s %d client=%s", g.get("request_id", "-"), request.method[:16], route,
                        response.status_code, client)
    return response
