"""What differs between the Keras backends (tensorflow, jax, torch) when serving, in one place.

Keras 3 runs the same model on each; two things are the backend's own:
* JAX compiles the model once per input shape, so every new batch size costs a compile (about
  0.1-1 s) while clients wait. Batches are padded up to the next power of two there, so at most
  log2(BATCH_SIZE)+1 shapes are ever compiled, all of them in the model server's warm-up.
  TensorFlow relaxes the batch dimension after two traces and PyTorch runs eagerly: no padding.
* `predict_on_batch` answers NumPy on every backend; `np.asarray` keeps that true for outputs
  that are backend tensors (a torch CPU tensor converts without a copy).
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

BACKENDS = ("tensorflow", "jax", "torch")


def backend() -> str:
    """The Keras backend of this process (fixed once Keras is imported)."""
    try:
        import keras

        return keras.backend.backend()
    except ImportError:
        return os.environ.get("KERAS_BACKEND", "tensorflow")


def compiles_per_shape() -> bool:
    return backend() == "jax"


def padded_size(n: int) -> int:
    """The batch size `n` images are run at: `n`, or the next power of two where shapes compile."""
    if not compiles_per_shape() or n <= 1:
        return n
    return 1 << (n - 1).bit_length()


def warm_up_sizes(limit: int) -> list[int]:
    """The batch sizes to run once at start-up so that no client pays for tracing or compiling."""
    if compiles_per_shape():
        return sorted({padded_size(n) for n in range(1, limit + 1)})
    return sorted({1, 2, limit})  # TensorFlow: two traces, then a shape with a free batch dimension


def predict_on_batch(model: Any, inputs: np.ndarray) -> np.ndarray:
    """`model.predict_on_batch(inputs)` as float32 NumPy, padded where the backend compiles per shape."""
    n = len(inputs)
    size = padded_size(n)
    if size != n:
        padding = np.zeros((size - n, *inputs.shape[1:]), dtype=inputs.dtype)
        inputs = np.concatenate([inputs, padding])
    outputs = np.asarray(model.predict_on_batch(inputs), dtype=np.float32)
    return outputs[:n]
