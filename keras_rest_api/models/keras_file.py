"""A user's own model through MODEL=<path>.keras: a saved `.keras` file, MODEL_LABELS and MODEL_PREPROCESSING.

The model repository (models.repository) is the richer way in; this path keeps the legacy
contract: each upload squashed to the model's input size, then MODEL_PREPROCESSING.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Mapping

from keras_rest_api.models.base import LoadedModel, ModelLoadError
from keras_rest_api.models.contracts import legacy_contract, model_name_from_file
from keras_rest_api.models.declared_size import check_settings_limits
from keras_rest_api.models.preprocessing import get_preprocessor

log = logging.getLogger(__name__)


def load_keras_file(config: Mapping[str, Any]) -> LoadedModel:
    """Load MODEL (a .keras path) with MODEL_LABELS and MODEL_PREPROCESSING."""
    import keras

    path = str(config["MODEL"])
    if not os.path.isfile(path):
        raise ModelLoadError(f"MODEL={path!r}: no such file. Point MODEL at a saved .keras model.")
    try:
        preprocess = get_preprocessor(str(config.get("MODEL_PREPROCESSING") or "unit"))
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from None
    log.info("loading Keras model from %s", path)
    # Before Keras builds (and initialises) every layer the file declares: a tiny file can
    # declare gigabytes of weights.
    check_settings_limits(path, config)
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as exc:
        raise ModelLoadError(f"MODEL={path!r} could not be loaded as a Keras model: {exc}") from exc
    input_size = _input_size(model, path)
    classes = int(model.output_shape[-1])
    labels = _read_labels(str(config.get("MODEL_LABELS") or ""), classes)
    name = os.path.splitext(os.path.basename(path))[0]
    mode = str(config.get("MODEL_PREPROCESSING") or "unit")
    return LoadedModel(
        name=model_name_from_file(name),
        model=model,
        input_size=input_size,
        labels=labels,
        preprocess=preprocess,
        preprocessing=mode,
        details={"path": path},
        contract=legacy_contract(name, input_size, classes, mode, config),
    )


def _input_size(model: Any, path: str) -> tuple[int, int]:
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[3] != 3 or shape[1] is None or shape[2] is None:
        raise ModelLoadError(
            f"{path}: expected an image classifier with input shape (None, height, width, 3), "
            f"received {shape}. Give the model a fixed-size RGB input."
        )
    return int(shape[1]), int(shape[2])


def _read_labels(path: str, classes: int) -> list[str]:
    if not path:
        log.warning("MODEL_LABELS is not set; classes will be named by index")
        return [str(i) for i in range(classes)]
    try:
        with open(path, encoding="utf-8") as f:
            labels = [line.strip() for line in f if line.strip()]
    except OSError as exc:
        raise ModelLoadError(f"MODEL_LABELS={path!r} cannot be read: {exc}") from None
    if len(labels) != classes:
        raise ModelLoadError(
            f"MODEL_LABELS={path!r} has {len(labels)} labels but the model has {classes} outputs. "
            "Give one label per line, in class-index order."
        )
    return labels
