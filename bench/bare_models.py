"""Bare-model throughput: EfficientNet-Lite0 next to ResNet50, `predict_on_batch`, this CPU.

No Redis, no web tier, no preprocessing: only the forward pass the model server runs per
batch, so the numbers bound what the whole service can do. Weights are untrained (speed
does not depend on their values). Usage: python -m bench.bare_models [--seconds 5]
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable

import numpy as np


from bench.timing import time_calls  # noqa: E402


def builders() -> dict[str, Callable[[], Any]]:
    import keras

    from keras_rest_api.models.efficientnet_lite0 import build_model

    return {
        "efficientnet_lite0": build_model,
        "resnet50": lambda: keras.applications.ResNet50(weights=None),
    }


def throughput(model: Any, batch: int, seconds: float) -> tuple[float, float]:
    """(images/s, median ms per batch) over at least `seconds`, after warm-up batches."""
    x = np.random.default_rng(0).uniform(-1, 1, (batch, 224, 224, 3)).astype(np.float32)
    times = time_calls(lambda: model.predict_on_batch(x), seconds, warmup=2, min_calls=3)
    return batch * len(times) / sum(times), 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per row")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    rows = []
    for name, build in builders().items():
        model = build()
        params = model.count_params()
        for batch in args.batches:
            rate, ms = throughput(model, batch, args.seconds)
            rows.append((name, params, batch, rate, ms))
    print(f"CPU cores: {os.cpu_count()}")
    print(f"{'model':<20}{'params':>12}{'batch':>7}{'images/s':>11}{'ms/batch':>11}")
    for name, params, batch, rate, ms in rows:
        print(f"{name:<20}{params:>12,}{batch:>7}{rate:>11.1f}{ms:>11.1f}")


if __name__ == "__main__":
    main()
