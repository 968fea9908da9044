"""A near-zero image classifier: what is left of a request's time is the serving overhead.

AveragePooling2D(8) -> Flatten -> Dense(10, softmax) on the same 224x224x3 input as the real
models. Its forward pass costs about 0.1 ms per image on a CPU core, so a benchmark with it
measures the web tier, the queue and the batching of whatever serves it, not the model.
The weights come from a fixed seed: every backend and every peer computes the same function.

Usage:  python -m bench.tiny_model DIRECTORY   # writes tiny.keras and tiny-labels.txt there
"""
from __future__ import annotations

import sys
from pathlib import Path

CLASSES = 10
INPUT_SIZE = (224, 224)
# The preprocessing the model expects (models/preprocessing.py): pixels scaled to 0..1.
PREPROCESSING = "unit"


def build() -> "object":
    """The tiny model with deterministic weights (seeded), as a Functional Keras model."""
    import keras
    import numpy as np

    inputs = keras.Input((*INPUT_SIZE, 3), name="image")
    x = keras.layers.AveragePooling2D(8, name="pool")(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax", name="scores")(x)
    model = keras.Model(inputs, outputs, name="tiny")
    rng = np.random.default_rng(14)
    kernel, bias = model.get_layer("scores").get_weights()
    # Large enough weights that the classes' probabilities differ clearly for real photographs.
    model.get_layer("scores").set_weights([rng.normal(0, 0.05, kernel.shape).astype("float32"),
                                           rng.normal(0, 0.5, bias.shape).astype("float32")])
    return model


def save(directory: Path) -> tuple[Path, Path]:
    """Write tiny.keras and its labels file into `directory`; returns both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    model_path, labels_path = directory / "tiny.keras", directory / "tiny-labels.txt"
    build().save(model_path)
    labels_path.write_text("".join(f"class_{i}\n" for i in range(CLASSES)))
    return model_path, labels_path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m bench.tiny_model DIRECTORY")
    for path in save(Path(sys.argv[1])):
        print(path)
