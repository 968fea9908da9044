"""64 concurrent worst-case uploads of each kind through real Apache keep the web tier's memory
under a stated figure while a normal client is served: the decode budget (imaging/budget.py) at
work in mod_wsgi's daemon processes. The budget and the costs themselves, in-process:
tests/unit/imaging/test_decode_budget.py; the worst cases: tests/support/decode_bombs.py.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.support.decode_bombs import KINDS
from tests.support.harness import Stack, running_stack
from tests.support.hostile_inputs import encode, noise

MIB = 2**20
PIXELS = 4_000_000  # MAX_IMAGE_PIXELS of the stack below

BUDGET = 96 * MIB
PROCESSES = 2
# Per daemon process, beyond its idle size: the decode budget plus what the rest of 32 threads'
# requests hold (uploads, responses, allocator slack). The stated figure the web tier stays under.
ALLOWANCE = BUDGET + 64 * MIB
BURST = 64


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_model_files):
    settings = {
        **tiny_model_files, "KEY_PREFIX": "budget", "MAX_IMAGE_PIXELS": PIXELS, "MAX_UPLOAD_BYTES": 2_000_000,
        "DECODE_MEMORY_BUDGET": BUDGET, "DECODE_WAIT_MS": 3000, "WSGI_PROCESSES": PROCESSES, "WSGI_THREADS": 32,
        "MAX_QUEUE_LENGTH": 1000, "BATCH_SIZE": 16, "QUEUE_BLOCK_MS": 200, "REQUEST_TIMEOUT": 30,
    }
    with running_stack(tmp_path_factory.mktemp("budget"), settings) as s:
        yield s


def daemon_pids(stack: Stack) -> list[int]:
    """The mod_wsgi daemon processes of this stack: named "(wsgi:...)", started from its server root."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"(wsgi:") and str(stack.server_root).encode() in cmdline:
            pids.append(int(entry.name))
    return pids


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class RssSampler:
    """Samples the total RSS of some processes every 10 ms on a thread; `peak` is the largest sum."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def total(self) -> int:
        return sum(rss(pid) for pid in self.pids)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.total())

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def small_png(seed: int) -> bytes:
    return encode(noise(48, 40, seed), "PNG")


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["png16_rgba", "float_tiff", "webp_lossless_rgba", "gif_huge_frame",
                                  "jpeg_exif_progressive"])
def test_64_concurrent_worst_case_uploads_keep_the_web_tier_under_its_budget(stack, kind, record_property):
    data = KINDS[kind](PIXELS)
    pids = daemon_pids(stack)
    assert len(pids) == PROCESSES, pids
    # Warm both processes (imports, first allocations) so the baseline is their working size.
    for seed in range(8):
        assert requests.post(f"{stack.url}/predict", files={"image": ("x.png", small_png(seed))}, timeout=30).ok
    baseline = sum(rss(pid) for pid in pids)

    normal: list[tuple[int, float]] = []
    burst_done = threading.Event()

    def normal_client() -> None:
        seed = 100
        while not burst_done.is_set():
            started = time.monotonic()
            response = requests.post(f"{stack.url}/predict", files={"image": ("x.png", small_png(seed))}, timeout=30)
            normal.append((response.status_code, time.monotonic() - started))
            seed += 1

    def upload(_: int) -> requests.Response:
        return requests.post(f"{stack.url}/predict", files={"image": ("bomb", data)}, timeout=60)

    with RssSampler(pids) as sampler:
        client = threading.Thread(target=normal_client)
        client.start()
        with ThreadPoolExecutor(BURST) as pool:
            responses = list(pool.map(upload, range(BURST)))
        burst_done.set()
        client.join(60)

    statuses = sorted(r.status_code for r in responses)
    for response in responses:
        assert response.status_code in (200, 413, 503), response.text
        assert response.headers["Content-Type"].startswith("application/json"), response.text
        body = response.json()
        assert body["success"] is (response.status_code == 200), body
        if response.status_code == 503:
            assert response.headers.get("Retry-After"), response.headers
    growth = sampler.peak - baseline
    record_property("peak_rss_mib", round(sampler.peak / MIB, 1))
    print(f"{kind}: {len(data)} bytes x {BURST}: statuses {dict((s, statuses.count(s)) for s in set(statuses))}; "
          f"web tier RSS {baseline / MIB:.0f} MiB idle, peak {sampler.peak / MIB:.0f} MiB "
          f"(+{growth / MIB:.0f} MiB, limit +{PROCESSES * ALLOWANCE / MIB:.0f}); normal client: {len(normal)} "
          f"requests, slowest {max(t for _, t in normal):.2f} s")
    assert statuses.count(200) > 0, statuses
    assert growth <= PROCESSES * ALLOWANCE, f"web tier grew by {growth / MIB:.0f} MiB"
    assert normal and all(status == 200 for status, _ in normal), normal
    assert max(seconds for _, seconds in normal) < 5.0, normal
