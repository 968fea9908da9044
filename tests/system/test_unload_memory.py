"""Unloading frees a model: 20 load/predict/unload cycles in one process leave RSS flat.

Runs bench/unload_memory.py (`python -m bench.unload_memory`) in a fresh process (nothing else
of the test session in its memory) on a saved model of 4.4 M parameters (17.5 MB file). Measured
on the 2-core development VM: RSS after cycle 2 685.6 MB, after cycle 20 686.0 MB (+0.3 MB, at most +1.2).
The control, holding every model instead of unloading it, grew about 30 MB a cycle
(679 -> 831 MB in 6 cycles), so the margin below (25 MB between the lowest RSS of cycles 2-6
and of cycles 16-20, 14 cycles apart) fails on a leak of even one model in ten cycles while
leaving room for the allocator's noise. The floor, not single cycles or medians: for a few
cycles in a row RSS can read 30-40 MB high while the allocator holds freed pages, then drop
back (seen in CI: 877 MB, three cycles at 910, then 871); a leak raises the floor itself.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.harness import PROJECT

keras = pytest.importorskip("keras")

MARGIN_MB = 25.0


@pytest.fixture(scope="module")
def mid_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(32, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.Conv2D(64, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(2048, activation="relu")(x)
    x = keras.layers.Dense(2048, activation="relu")(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    path = tmp_path_factory.mktemp("mid") / "mid.keras"
    keras.Model(inputs, outputs).save(path)
    return str(path)


def _rss(model: str, cycles: int, *extra: str) -> list[float]:
    result = subprocess.run(
        [sys.executable, "-m", "bench.unload_memory", "--keras", model, "--cycles", str(cycles), "--json", *extra],
        cwd=PROJECT, capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])["rss_mb"]


def test_twenty_load_unload_cycles_leave_rss_flat(mid_model: str) -> None:
    figures = _rss(mid_model, 20)
    growth = min(figures[-5:]) - min(figures[1:6])
    assert growth < MARGIN_MB, f"RSS grew {growth:.1f} MB from cycles 2-6 to 16-20: {figures}"


def test_the_measurement_sees_a_model_that_is_not_unloaded(mid_model: str) -> None:
    # The control: the same cycles holding each model. Without this, a flat line could mean
    # the measurement cannot see a model's memory at all.
    figures = _rss(mid_model, 8, "--keep")
    assert figures[-1] - figures[1] > MARGIN_MB, f"RSS per cycle (MB): {figures}"
    # The same measure as above sees it too, over as many cycles.
    kept = _rss(mid_model, 20, "--keep")
    assert min(kept[-5:]) - min(kept[1:6]) > MARGIN_MB, f"RSS per cycle (MB): {kept}"
