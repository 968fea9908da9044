"""The format of client API keys (API_KEYS, API_KEYS_FILE): `name:key` pairs.

Its own small module so that both the settings' validation at start (keras_rest_api.settings,
which must stay free of Flask) and the web tier's key check (web.auth) parse keys the same way.
"""
from __future__ import annotations

import re

__all__ = ["ApiKeyError", "MIN_KEY_LENGTH", "parse_api_keys"]

MIN_KEY_LENGTH = 16
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


class ApiKeyError(ValueError):
    """API_KEYS or API_KEYS_FILE cannot be used as it is."""


def parse_api_keys(text: str, source: str) -> dict[str, str]:
    """`name:key` pairs separated by commas or newlines (blank lines and `#` comments skipped).

    Errors name `source` and the entry's position and name, never a key.
    """
    keys: dict[str, str] = {}
    entries = [e.strip() for line in text.splitlines() for e in line.split("#", 1)[0].split(",")]
    for position, entry in enumerate((e for e in entries if e), start=1):
        name, sep, key = (part.strip() for part in entry.partition(":"))
        if not sep or not _NAME.fullmatch(name):
            raise ApiKeyError(f"{source}: entry {position} is not `name:key` with a name of 1-64 letters, digits, "
                              "'.', '_' or '-'. Expected e.g. API_KEYS='ops:<random key>,app:<random key>'.")
        if len(key) < MIN_KEY_LENGTH or any(c.isspace() for c in key):
            raise ApiKeyError(f"{source}: the key named {name!r} is shorter than {MIN_KEY_LENGTH} characters or "
                              "has spaces; use a long random key, e.g. from `openssl rand -hex 32`.")
        if name in keys:
            raise ApiKeyError(f"{source}: the name {name!r} appears twice; give each key its own name.")
        keys[name] = key
    return keys
