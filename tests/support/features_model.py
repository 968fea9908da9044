"""A small features model for tests: four named features (two numeric, two categorical) in, the
probability of "churn" out; untrained (fixed seed), so any answer is exactly reproducible."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

CHURN_CONFIG = {
    "input": {"kind": "features", "features": [
        {"name": "age", "mean": 40, "std": 10, "range": [0, 120], "unit": "years"},
        {"name": "income", "min": 0, "max": 1000, "range": [0, None], "default": 500},
        {"name": "region", "type": "categorical", "vocabulary": ["north", "south"], "unknown": "bucket"},
        {"name": "plan", "type": "categorical", "vocabulary": ["basic", "gold"]},
    ]},
    "output": {"kind": "probability", "positive_label": "churn"},
    "batching": {"max_batch_size": 64, "max_wait_ms": 0},
}


def write_churn_model(root: Path, name: str = "churn") -> Path:
    """<root>/<name>/config.json and 1/model.keras; the folder."""
    import keras

    folder = root / name
    (folder / "1").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(CHURN_CONFIG))
    keras.utils.set_random_seed(1)
    inputs = keras.Input(shape=(7,))  # age, income, region (2 + bucket), plan (2)
    keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs)).save(folder / "1" / "model.keras")
    return folder


def churn_row(instance: dict[str, Any]) -> np.ndarray:
    """The queue row of an instance of the churn model (income's default, region's bucket applied)."""
    region = ["north", "south"].index(instance["region"]) if instance["region"] in ("north", "south") else 2
    return np.array([[instance["age"], instance.get("income", 500), region, ["basic", "gold"].index(instance["plan"])]],
                    dtype=np.float64)
