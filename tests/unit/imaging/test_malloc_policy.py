"""imaging.budget.set_malloc_policy: request buffers come from memory the heap already holds,
large decodes still go back to the system. Each case runs in a fresh process (mallopt settings
are process-wide and cannot be undone)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.harness import PROJECT

# glibc's mallinfo2().hblks counts blocks served straight by mmap: those are unmapped on free and
# faulted in anew the next time. Prints how many of two allocations came that way: a request
# buffer (300 KiB, an upload or a decoded photo) and a large decode (6 MiB). Run with `python -c`
# in the checkout, whose folder comes first on sys.path.
_ALLOCATE = """
import ctypes, threading
from keras_rest_api.imaging.budget import set_malloc_policy
assert set_malloc_policy({keep})

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.mallinfo2.restype = MallInfo2
counts = []

def request():  # in a thread of its own, as in a web daemon: a fresh heap (glibc arena)
    libc.malloc(64 << 10)  # the heap grows (by its padding) for a small block first
    for size in (300 << 10, 6 << 20):
        before = libc.mallinfo2().hblks
        libc.malloc(size)
        counts.append(libc.mallinfo2().hblks - before)

thread = threading.Thread(target=request)
thread.start()
thread.join()
print(*counts)
"""


def _mmapped(keep: int) -> list[int]:
    script = _ALLOCATE.format(keep=keep)
    output = subprocess.run([sys.executable, "-c", script], cwd=PROJECT, check=True, capture_output=True, text=True,
                            timeout=60)
    return [int(n) for n in output.stdout.split()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_request_buffers_come_from_the_heap_and_large_decodes_from_mmap() -> None:
    # MALLOC_KEEP_BYTES=0: glibc's heap padding (128 KiB) leaves no room, the 300 KiB buffer is
    # mapped and unmapped on every request (in a web daemon: ~100 page faults per request).
    assert _mmapped(keep=0) == [1, 1]
    # The default, 1 MiB: the heap grew by 4 MiB and serves the buffer; the 6 MiB decode is
    # still mapped, so freeing it gives the memory back.
    assert _mmapped(keep=1 << 20) == [0, 1]
