"""The models the model server can serve, behind one small interface.

A model is described by a `LoadedModel`: the Keras model, its labels, its contract
(`protocol.ModelContract`: input size, resize policy, normalisation, batching) and the
vectorised preprocessing that turns a batch of uint8 RGB pixels into its input.

Two ways in: `open_repository(settings)` reads the model repository (MODEL_REPOSITORY, one
folder per model with a config.json and numbered version folders; see models/repository.py),
and `load_model(settings)`, the single-model path, loads what MODEL names (a name registered
in `BUILTIN_MODELS`, or a path to a saved `.keras` file). `unload` frees a model's memory.
Only the model server imports this package (it imports Keras).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

import numpy as np

from models import backends
from models.preprocessing import PREPROCESSORS

if TYPE_CHECKING:
    from protocol import ModelContract

log = logging.getLogger(__name__)

__all__ = ["LoadedModel", "ModelLoadError", "ModelConfigError", "ModelRepository", "BUILTIN_MODELS", "load_model",
           "open_repository", "unload", "PREPROCESSORS"]


class ModelLoadError(RuntimeError):
    """The configured model cannot be loaded; the message says which setting to change."""


from models.repository import ModelConfigError, ModelRepository  # noqa: E402  (needs ModelLoadError)


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
    contract: Optional["ModelContract"] = None

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (N, classes), for uint8 RGB pixels of shape (N, H, W, 3)."""
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


def load_model(config: Mapping[str, Any]) -> LoadedModel:
    """Load the model that `config["MODEL"]` names (a built-in name or a `.keras` path), version "1".

    A built-in model gets the contract of its entry in the project's model_repository/ (the
    preprocessing its authors evaluated it with); a `.keras` path the legacy contract: squashed
    to the model's input, MODEL_PREPROCESSING normalisation, BATCH_SIZE and BATCH_WAIT_MS.
    """
    from models.loading import finish

    loaded = _load(config)
    precision = str(config.get("MODEL_PRECISION") or "float32")
    return finish(loaded, precision)


def open_repository(config: Mapping[str, Any]) -> "ModelRepository":
    """The model repository at config["MODEL_REPOSITORY"] (default: the project's model_repository/)."""
    from models.repository import open_repository as _open

    return _open(config)


def unload(loaded: LoadedModel) -> None:
    """Free what `loaded` holds (the Keras model, its traced functions), so reloads do not grow memory.

    The LoadedModel stays as a record (name, version, contract) but can no longer predict.
    """
    from models.loading import release

    release(loaded)


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

