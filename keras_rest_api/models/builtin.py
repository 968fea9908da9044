"""The models built into the package, and the single-model path that loads what MODEL names.

`BUILTIN_MODELS` maps each built-in name (config.BUILTIN_NAMES, the names a config.json may give
as "source": "builtin:<name>") to its loader. `load_model(settings)` loads MODEL: a built-in
name, or a path to a saved `.keras` file (models.keras_file), as version "1".
"""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping

from keras_rest_api.models.base import LoadedModel, ModelLoadError
from keras_rest_api.models.config import BUILTIN_NAMES
from keras_rest_api.models.contracts import finish
from keras_rest_api.models.efficientnet_lite0 import load_efficientnet_lite0
from keras_rest_api.models.keras_file import load_keras_file
from keras_rest_api.models.resnet50 import load_resnet50

BUILTIN_MODELS: dict[str, Callable[[Mapping[str, Any]], LoadedModel]] = {
    "resnet50": load_resnet50,
    "efficientnet_lite0": load_efficientnet_lite0,
}
# config.py validates "source" against BUILTIN_NAMES without importing the loaders: keep the two equal.
if set(BUILTIN_MODELS) != set(BUILTIN_NAMES):
    raise ImportError(f"BUILTIN_MODELS {tuple(BUILTIN_MODELS)} and config.BUILTIN_NAMES {BUILTIN_NAMES} differ")


def load_model(config: Mapping[str, Any]) -> LoadedModel:
    """Load the model that `config["MODEL"]` names (a built-in name or a `.keras` path), version "1".

    A built-in model gets the contract of its entry in the shipped keras_rest_api/model_repository/
    (the preprocessing its authors evaluated it with); a `.keras` path the legacy contract: squashed
    to the model's input, MODEL_PREPROCESSING normalisation, BATCH_SIZE and BATCH_WAIT_MS.
    """
    loaded = _load(config)
    precision = str(config.get("MODEL_PRECISION") or "float32")
    return finish(loaded, precision)


def _load(config: Mapping[str, Any]) -> LoadedModel:
    name = str(config["MODEL"])
    loader = BUILTIN_MODELS.get(name)
    if loader is not None:
        return loader(config)
    if name.endswith(".keras") or os.path.sep in name:
        return load_keras_file(config)
    raise ModelLoadError(
        f"MODEL={name!r} is neither a built-in model ({', '.join(sorted(BUILTIN_MODELS))}) "
        "nor a path to a saved .keras file. Set MODEL to one of those."
    )
