"""A request body that measures how far anything read into it, by position.

Counting calls to `read`/`readline` misses Werkzeug's LimitedStream, which reads through
`readinto`; here every way of reading (read, read1, readinto, readinto1, readline, readlines,
iteration) records the position it left the buffer at, and a reader that rewinds afterwards
cannot hide what it read. Seeking alone is not reading: Werkzeug's test client seeks to the end
and back to learn the length.
"""
from __future__ import annotations

import io
from typing import Any

READERS = ("read", "read1", "readinto", "readinto1", "readline", "readlines", "__next__")


class MeasuredBody(io.BytesIO):
    """The bytes of a request body; `bytes_read` is the furthest position any read reached."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.furthest = 0

    @property
    def bytes_read(self) -> int:
        return self.furthest


def _measured(name: str) -> Any:
    unmeasured = getattr(io.BytesIO, name)

    def reader(self: MeasuredBody, *args: Any) -> Any:
        try:
            return unmeasured(self, *args)
        finally:
            self.furthest = max(self.furthest, self.tell())

    reader.__name__ = name
    return reader


for _name in READERS:
    setattr(MeasuredBody, _name, _measured(_name))
