"""Does unloading free a model? Load, predict, unload N times in one process; RSS after each cycle.

    python -m bench.unload_memory --cycles 20                       # EfficientNet-Lite0 (repository)
    python -m bench.unload_memory --cycles 20 --model resnet50      # needs its weights file
    python -m bench.unload_memory --cycles 20 --keras path.keras    # any saved model

Prints one line per cycle (RSS in MB) and, at the end, the growth from cycle 2 to the last
(cycle 1 pays for one-time costs: TensorFlow's kernels, thread pools, Keras's imports).
--keep holds every loaded model instead of unloading it: the control, showing what a leak
of one model per cycle looks like. --json prints the figures as one JSON line at the end.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def rss_mb() -> float:
    """This process's resident set size in MB, from /proc (what the kernel charges it)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def keras_repository(model_path: str, directory: str) -> str:
    """A one-model repository around a saved .keras file (labels by index)."""
    folder = os.path.join(directory, "m", "1")
    os.makedirs(folder)
    os.symlink(os.path.abspath(model_path), os.path.join(folder, "model.keras"))
    with open(os.path.join(directory, "m", "config.json"), "w") as f:
        json.dump({"preprocessing": {"resize": "squash"}}, f)
    logging.getLogger("keras_rest_api.models.loading").setLevel(logging.ERROR)  # no "labels by index" warning per cycle
    return directory


def cycles(repository: Any, name: str, count: int, batch: int, keep: bool = False) -> list[float]:
    import numpy as np

    from keras_rest_api import models

    figures, kept = [], []
    for cycle in range(1, count + 1):
        started = time.perf_counter()
        loaded = repository.load(name, repository.versions_to_serve(name)[-1])
        height, width = loaded.input_size
        loaded.predict(np.zeros((batch, height, width, 3), dtype=np.uint8))  # traces predict
        if keep:
            kept.append(loaded)
        else:
            models.unload(loaded)
        figures.append(rss_mb())
        print(f"cycle {cycle:2d}: RSS {figures[-1]:7.1f} MB ({time.perf_counter() - started:.1f} s)", flush=True)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--model", default="efficientnet_lite0", help="a model of MODEL_REPOSITORY")
    parser.add_argument("--keras", default="", help="a saved .keras file instead")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--keep", action="store_true", help="keep every model loaded (the control)")
    parser.add_argument("--json", action="store_true", help="end with the figures as one JSON line")
    args = parser.parse_args()

    from keras_rest_api import models
    from keras_rest_api import settings

    config = settings.load()
    with tempfile.TemporaryDirectory() as tmp:
        name = args.model
        if args.keras:
            config["MODEL_REPOSITORY"], name = keras_repository(args.keras, tmp), "m"
        print(f"start: RSS {rss_mb():.1f} MB")
        figures = cycles(models.open_repository(config), name, args.cycles, args.batch, args.keep)
    growth = figures[-1] - figures[1]
    print(f"RSS after cycle 2: {figures[1]:.1f} MB, after cycle {len(figures)}: {figures[-1]:.1f} MB, "
          f"growth {growth:+.1f} MB; max {max(figures[1:]):.1f} MB")
    if args.json:
        print(json.dumps({"rss_mb": figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
