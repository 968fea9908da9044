"""A per-process budget of bytes that concurrent image decodes (and request parsing) may hold at once.

An upload's decode cost is known from its header before any pixel is decoded (see
`imaging.decode_cost`). Each decode reserves its cost here first: when the budget has room it
goes ahead at once; when it has not, it waits a little for other decodes to finish; an upload
whose cost alone exceeds the whole budget is refused at once (413), and one that still finds no
room after the wait is refused with 503 and Retry-After. So the memory one web process spends on
decoding stays under DECODE_MEMORY_BUDGET bytes whatever clients send and however many daemon
threads are busy. Parsing a request body (multipart, JSON tensors, binary tensors) reserves
what it may cost here too, before the body is read (web.dataplane.DataPlane.parsing).

The waits are on a condition variable with a deadline, not polling: each release wakes the
waiters, and each re-checks whether it now fits.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from keras_rest_api.errors import ImageTooLarge, ServiceUnavailable

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h), and the size from which an allocation that the heap
# cannot serve from memory it already has is served by mmap.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_THRESHOLD_BYTES = 128 * 1024


# How a refusal words the work and what the client can do about it (decoding; parsing passes its own).
DECODING = "Decoding this image"
DECODE_ADVICE = "Send a smaller image (fewer pixels, 8 bits per channel, or JPEG)."


class DecodeTooLarge(ImageTooLarge):
    """The upload's decode alone needs more than the whole budget: 413, retrying cannot help."""


class DecodeBusy(ServiceUnavailable):
    """Other decodes hold the budget and none finished in time: 503, retry shortly."""


class DecodeBudget:
    """A counting semaphore over bytes, with a bounded wait.

    `capacity` 0 or less means unbounded (no accounting): for tools and unit tests that decode
    one image at a time.
    """

    def __init__(self, capacity: int, wait_seconds: float, retry_after: int = 1) -> None:
        self.capacity = int(capacity)
        self.wait_seconds = max(0.0, float(wait_seconds))
        self.retry_after = int(retry_after)
        self._in_use = 0
        self._peak = 0
        self._condition = threading.Condition(threading.Lock())

    @property
    def in_use(self) -> int:
        """Bytes reserved right now."""
        with self._condition:
            return self._in_use

    @property
    def peak(self) -> int:
        """The most bytes ever reserved at once in this process (for tests and diagnostics)."""
        with self._condition:
            return self._peak

    def acquire(self, nbytes: int, what: str = DECODING, advice: str = DECODE_ADVICE) -> None:
        """Reserve `nbytes`, waiting at most `wait_seconds`; DecodeTooLarge or DecodeBusy if not.

        `what` (e.g. "Decoding this image") and `advice` (how to send less) word the 413.
        """
        if self.capacity <= 0:
            return
        if nbytes > self.capacity:
            raise DecodeTooLarge(
                f"{what} needs about {_mib(nbytes)} of memory; this server holds at most "
                f"{_mib(self.capacity)} for decoding and parsing at once (DECODE_MEMORY_BUDGET). {advice}"
            )
        deadline = time.monotonic() + self.wait_seconds
        with self._condition:
            while self._in_use + nbytes > self.capacity:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._condition.wait(remaining):
                    if self._in_use + nbytes <= self.capacity:
                        break  # room appeared just as the wait ran out
                    log.warning("decode of %d bytes refused: %d of %d bytes in use after %.0f ms",
                                nbytes, self._in_use, self.capacity, self.wait_seconds * 1000)
                    raise DecodeBusy(
                        f"The server is busy decoding other requests (needs {_mib(nbytes)}, "
                        f"{_mib(self.capacity - self._in_use)} free). Retry shortly.",
                        self.retry_after,
                    )
            self._in_use += nbytes
            self._peak = max(self._peak, self._in_use)

    def release(self, nbytes: int) -> None:
        """Give back what `acquire(nbytes)` reserved and wake the waiters."""
        if self.capacity <= 0:
            return
        with self._condition:
            self._in_use -= nbytes
            self._condition.notify_all()

    @contextmanager
    def reserve(self, nbytes: int, what: str = DECODING, advice: str = DECODE_ADVICE) -> Iterator[None]:
        """`with budget.reserve(n):` holds `n` bytes of the budget for the block."""
        self.acquire(nbytes, what, advice)
        try:
            yield
        finally:
            self.release(nbytes)


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB"


def set_malloc_policy(keep_bytes: int) -> bool:
    """How this web process's glibc malloc holds memory; False without glibc's mallopt.

    1. Large allocations (decoded images, decoder buffers) that a heap cannot serve from memory
       it already holds come from mmap, and freeing them gives the memory back to the system. By
       default glibc raises its mmap threshold to the size of each large block freed, after which
       image-sized blocks come from per-thread heaps that keep the memory: under concurrent
       decodes the web processes' RSS grew to twice what the decode budget allows (measured in
       tests/unit/imaging/test_decode_budget.py). A fixed threshold also turns that raising off.
    2. With `keep_bytes` (settings MALLOC_KEEP_BYTES) above 0, each heap grows 4 x `keep_bytes`
       at a time and is trimmed only when more than 8 x `keep_bytes` lie free at its top. The
       per-request buffers (the upload, the decoded photo, 150 KB of pixels) are then carved from
       memory the heap already holds, instead of the heap shrinking after each request and
       faulting its pages in again on the next: about 100 page faults, ~0.4 ms of CPU, per
       request (docs/performance.md).
    """
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError) as exc:
        log.debug("no mallopt (%s); freed image memory may stay with the process", exc)
        return False
    if mallopt is None:
        log.debug("no C library found; freed image memory may stay with the process")
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    wanted = [(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)]
    if keep_bytes > 0:
        keep = min(int(keep_bytes), 64 * 1024 * 1024)  # 8 x keep must fit mallopt's int
        wanted += [(_M_TOP_PAD, 4 * keep), (_M_TRIM_THRESHOLD, 8 * keep)]
    applied = all(mallopt(param, value) == 1 for param, value in wanted)
    if not applied:
        log.debug("mallopt refused a parameter; freed image memory may stay with the process")
    return applied
