"""helpers.keep_freed_memory: per-request buffers come from the heap and stay there for reuse."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import keep_freed_memory

PROJECT = Path(__file__).resolve().parent.parent

# In a fresh process: allocate a 900 KiB buffer (an upload or a decoded photo) and ask glibc
# (mallinfo2) how many blocks it got straight from mmap, i.e. will hand back to the kernel on
# free and fault in anew next time.
_ALLOCATE = """
import ctypes, sys
sys.path.insert(0, {project!r})
import helpers
if {keep}:
    assert helpers.keep_freed_memory(1 << 20)

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.mallinfo2.restype = MallInfo2
before = libc.mallinfo2().hblks
block = libc.malloc(900 << 10)
print(libc.mallinfo2().hblks - before)
"""


def _mmapped_blocks(keep: bool) -> int:
    script = _ALLOCATE.format(project=str(PROJECT), keep=keep)
    return int(subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True,
                              timeout=60).stdout)


def test_zero_leaves_glibc_alone() -> None:
    assert keep_freed_memory(0) is False


def test_request_sized_buffers_come_from_the_heap_not_from_mmap() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc only")
    # glibc's defaults: a fresh process maps anything over 128 KiB on its own, and unmaps it on
    # free; in a web daemon (32 threads, each with an arena that shrinks and regrows) that was
    # about 100 page faults per request.
    assert _mmapped_blocks(keep=False) == 1
    assert _mmapped_blocks(keep=True) == 0
