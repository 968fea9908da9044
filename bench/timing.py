"""Timing a model call the same way everywhere in the benchmarks."""
from __future__ import annotations

import time
from typing import Callable


def time_calls(call: Callable[[], object], seconds: float, warmup: int = 3, min_calls: int = 5) -> list[float]:
    """Seconds taken by each call of `call()`, sorted, over at least `seconds` and `min_calls`.

    The `warmup` untimed calls absorb graph tracing and kernel selection.
    """
    for _ in range(warmup):
        call()
    times = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds or len(times) < min_calls:
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return sorted(times)
