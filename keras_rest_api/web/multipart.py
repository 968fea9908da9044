"""Multipart parsing without compiling two regular expressions per request.

Werkzeug's `MultipartDecoder` compiles two patterns that embed the request's boundary. Clients
pick a fresh random boundary for every request, so `re`'s cache never hits, and the two compiles
(pure Python, in `re._parser`) were the largest single cost of parsing an upload in the web
daemons: about 0.3-0.5 ms of CPU per request, more than reading the 30 KB body. `BoundaryPattern`
finds the same matches as those patterns, with `bytes.find` for the boundary and one tail
pattern compiled once; `install` makes Werkzeug's form parser use it. Everything else (the
state machine, size and part limits, header parsing) stays Werkzeug's own.
"""
from __future__ import annotations

import logging
import re
from typing import Any

from werkzeug import formparser
from werkzeug.sansio import multipart

log = logging.getLogger(__name__)

# What follows "--boundary" in Werkzeug's patterns: the closing "--" with optional trailing
# blanks and line break, or optional blanks and a line break. [^\S\n\r] is horizontal whitespace.
_LINE_BREAKS = (b"\r\n", b"\n", b"\r")  # the order of Werkzeug's (?:\r\n|\n|\r)
_TAIL = re.compile(rb"(--[^\S\n\r]*(?:\r\n|\n|\r)?|[^\S\n\r]*(?:\r\n|\n|\r))")


class BoundaryMatch:
    """The parts of an `re.Match` the decoder reads: start(), end() and group(1)."""

    __slots__ = ("_start", "_end", "_group")

    def __init__(self, start: int, end: int, group: bytes) -> None:
        self._start, self._end, self._group = start, end, group

    def start(self) -> int:
        return self._start

    def end(self) -> int:
        return self._end

    def group(self, index: int) -> bytes:
        if index != 1:
            raise IndexError("only group 1 (what follows the boundary) is recorded")
        return self._group


class BoundaryPattern:
    """`search` as Werkzeug's `preamble_re` (line break optional) or `boundary_re` (required).

    The same leftmost match as the regular expression: a match starting at s has its "--boundary"
    at s, s+1 or s+2, so the starts next to each occurrence are tried in order, each as the
    regular expression would (line break alternatives in its order, then none if optional).
    """

    def __init__(self, boundary: bytes, line_break_optional: bool) -> None:
        self.needle = b"--" + boundary
        self.prefixes = _LINE_BREAKS + ((b"",) if line_break_optional else ())

    def search(self, buffer: bytes | bytearray, pos: int = 0) -> BoundaryMatch | None:
        occurrence = buffer.find(self.needle, pos)
        while occurrence != -1:
            for start in range(max(pos, occurrence - 2), occurrence + 1):
                match = self._match_at(buffer, start)
                if match is not None:
                    return match
            occurrence = buffer.find(self.needle, occurrence + 1)
        return None

    def _match_at(self, buffer: bytes | bytearray, start: int) -> BoundaryMatch | None:
        for prefix in self.prefixes:
            if not buffer.startswith(prefix, start):
                continue
            at = start + len(prefix)
            if not buffer.startswith(self.needle, at):
                continue
            tail = _TAIL.match(buffer, at + len(self.needle))
            if tail is not None:
                return BoundaryMatch(start, tail.end(), tail.group(1))
        return None


class FastMultipartDecoder(multipart.MultipartDecoder):
    """Werkzeug's decoder with `BoundaryPattern`s in place of the two per-request compiles."""

    def __init__(self, boundary: bytes, max_form_memory_size: int | None = None, *,
                 max_parts: int | None = None) -> None:
        # The attributes of Werkzeug's __init__ (checked against it by `install`), minus re.compile.
        self.buffer = bytearray()
        self.complete = False
        self.max_form_memory_size = max_form_memory_size
        self.max_parts = max_parts
        self.state = multipart.State.PREAMBLE
        self.boundary = boundary
        self.preamble_re = BoundaryPattern(boundary, line_break_optional=True)  # type: ignore[assignment]
        self.boundary_re = BoundaryPattern(boundary, line_break_optional=False)  # type: ignore[assignment]
        self._search_position = 0
        self._parts_decoded = 0


def _attributes(decoder: Any) -> set[str]:
    return set(vars(decoder))


def install() -> bool:
    """Make Werkzeug's form parser use `FastMultipartDecoder`; False (and Werkzeug's own
    decoder kept) when this Werkzeug's decoder sets up other attributes than the ones mirrored."""
    if formparser.MultipartDecoder is FastMultipartDecoder:
        return True
    reference = multipart.MultipartDecoder(b"x", 1, max_parts=1)
    if _attributes(reference) != _attributes(FastMultipartDecoder(b"x", 1, max_parts=1)):
        log.warning("Werkzeug's MultipartDecoder changed; keeping it (multipart parsing costs ~0.4 ms more)")
        return False
    formparser.MultipartDecoder = FastMultipartDecoder  # type: ignore[misc]
    return True
