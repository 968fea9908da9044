"""The models the model server can serve, behind one small interface.

A model is described by a `LoadedModel`: the Keras model, its input size, its labels and
the vectorised preprocessing that turns a batch of uint8 RGB pixels into its input. The
`MODEL` setting picks one: a name registered in `BUILTIN_MODELS`, or a path to a saved
`.keras` file. Only the model server imports this package (it imports Keras).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from models.precision import with_precision
from models.preprocessing import PREPROCESSORS

log = logging.getLogger(__name__)

__all__ = ["LoadedModel", "ModelLoadError", "BUILTIN_MODELS", "load_model", "PREPROCESSORS"]


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
    # How the web tier turns a photo into `input_size` pixels (the geometry of its
    # protocol.ModelContract, see model_server.models.contract_of): the protocol the model was
    # evaluated with. Squash unless the model declares otherwise.
    resize: str = "squash"
    crop_fraction: float = 0.875
    interpolation: str = "bilinear"

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (N, classes), for uint8 RGB pixels of shape (N, H, W, 3)."""
        expected = (*self.input_size, 3)
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[1:] != expected:
            raise ValueError(
                f"{self.name} expects uint8 pixels of shape (N, {expected[0]}, {expected[1]}, 3), "
                f"received {pixels.dtype} {pixels.shape}."
            )
        outputs = self.model.predict_on_batch(self.preprocess(pixels))
        return np.asarray(outputs, dtype=np.float32)

    def metadata(self) -> dict[str, Any]:
        """What the web tier needs to know about this model, published through Redis."""
        return {
            "model": self.name,
            "input_height": self.input_size[0],
            "input_width": self.input_size[1],
            "classes": len(self.labels),
            "preprocessing": self.preprocessing,
            "precision": self.precision,
        }


def load_model(config: Mapping[str, Any]) -> LoadedModel:
    """Load the model that `config["MODEL"]` names (a built-in name or a `.keras` path)."""
    loaded = _load(config)
    precision = str(config.get("MODEL_PRECISION") or "float32")
    try:
        loaded.model = with_precision(loaded.model, precision)
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from None
    loaded.precision = precision
    return loaded


def _load(config: Mapping[str, Any]) -> LoadedModel:
    name = str(config["MODEL"])
    loader = BUILTIN_MODELS.get(name)
    if loader is not None:
        return loader(config)
    if name.endswith(".keras") or os.path.sep in name:
        from models.keras_file import load_keras_file

        return load_keras_file(config)
    raise ModelLoadError(
        f"MODEL={name!r} is neither a built-in model ({', '.join(sorted(BUILTIN_MODELS))}) "
        "nor a path to a saved .keras file. Set MODEL to one of those."
    )


def _load_resnet50(config: Mapping[str, Any]) -> LoadedModel:
    from models.resnet50 import load_resnet50

    return load_resnet50(config)


def _load_efficientnet_lite0(config: Mapping[str, Any]) -> LoadedModel:
    from models.efficientnet_lite0 import load_efficientnet_lite0

    return load_efficientnet_lite0(config)


BUILTIN_MODELS: dict[str, Callable[[Mapping[str, Any]], LoadedModel]] = {
    "resnet50": _load_resnet50,
    "efficientnet_lite0": _load_efficientnet_lite0,
}

