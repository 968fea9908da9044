"""What every model loader returns and raises: `LoadedModel` and `ModelLoadError`.

A model is described by a `LoadedModel`: the Keras model, its labels, its contract
(`keras_rest_api.queue.records.ModelContract`: input size, resize policy, normalisation,
batching) and the vectorised preprocessing that turns a batch of uint8 RGB pixels into its input.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from keras_rest_api.models import backends
from keras_rest_api.queue.records import ModelContract


class ModelLoadError(RuntimeError):
    """The configured model cannot be loaded; the message says which setting to change."""


@dataclass
class LoadedModel:
    """A ready-to-serve model: what the model server needs and what it publishes."""

    name: str
    model: Any  # keras.Model
    input_size: tuple[int, int]  # (height, width)
    labels: Sequence[str]
    preprocess: Callable[[np.ndarray], np.ndarray]
    preprocessing: str = "unknown"
    precision: str = "float32"  # MODEL_PRECISION: float32, or bfloat16 for speed
    details: dict[str, Any] = field(default_factory=dict)
    version: str = "1"
    # What the model declares (geometry for the web tier, normalisation, batching); None only
    # inside a loader, before the contract is attached.
    contract: Optional[ModelContract] = None

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (N, classes), for uint8 RGB pixels of shape (N, H, W, 3);
        for a features model, its outputs (N, classes) for rows of raw feature values (N, features)."""
        if self.contract is not None and self.contract.takes_features:
            return self._predict_features(pixels)
        expected = (*self.input_size, 3)
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[1:] != expected:
            raise ValueError(
                f"{self.name} expects uint8 pixels of shape (N, {expected[0]}, {expected[1]}, 3), "
                f"received {pixels.dtype} {pixels.shape}."
            )
        if self.model is None:
            raise RuntimeError(f"{self.name} version {self.version} was unloaded; load it again to use it.")
        # Through models.backends: JAX runs padded batches (one compile per power of two).
        return backends.predict_on_batch(self.model, self.preprocess(pixels))

    def _predict_features(self, rows: np.ndarray) -> np.ndarray:
        assert self.contract is not None
        count = len(self.contract.features)
        if rows.ndim != 2 or rows.shape[1] != count:
            raise ValueError(f"{self.name} expects rows of {count} feature values (N, {count}), received {rows.shape}.")
        if self.model is None:
            raise RuntimeError(f"{self.name} version {self.version} was unloaded; load it again to use it.")
        return backends.predict_on_batch(self.model, self.preprocess(np.asarray(rows, dtype=np.float64)))

    def metadata(self) -> dict[str, Any]:
        """What the web tier needs to know about this model, published through Redis."""
        return {
            "model": self.name,
            "version": self.version,
            "input_height": self.input_size[0],
            "input_width": self.input_size[1],
            "classes": len(self.labels),
            "preprocessing": self.preprocessing,
            "precision": self.precision,
        }
