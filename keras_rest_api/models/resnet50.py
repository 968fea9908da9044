"""ResNet50 (the tutorial's model): Keras's ImageNet classifier.

Its contract (caffe normalisation on BGR, shorter side to 256 then a 224 center crop,
bilinear) is in keras_rest_api/model_repository/resnet50/config.json, with its sources in
that folder's README.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Mapping

from keras_rest_api.models.base import LoadedModel, ModelLoadError
from keras_rest_api.models.contracts import builtin_contract, contract_preprocessor
from keras_rest_api.models.imagenet import imagenet_labels

log = logging.getLogger(__name__)

WEIGHTS_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
INPUT_SIZE = (224, 224)


def load_resnet50(config: Mapping[str, Any]) -> LoadedModel:
    """ResNet50 with weights from MODEL_WEIGHTS, else Keras's cache, else Keras's download."""
    import keras

    weights_setting = str(config.get("MODEL_WEIGHTS") or "")
    if weights_setting == "random":
        log.warning("MODEL_WEIGHTS=random: ResNet50 is untrained; its answers are meaningless")
        model = keras.applications.ResNet50(weights=None)
        source = "random"
    else:
        path = weights_setting or _cached_weights()
        if path and not os.path.isfile(path):
            raise ModelLoadError(f"MODEL_WEIGHTS={path!r} does not exist. Point it at {WEIGHTS_FILE}.")
        model, source = _build(keras, path)
    labels = imagenet_labels()
    contract = builtin_contract("resnet50", INPUT_SIZE, len(labels), config)
    return LoadedModel(
        name="resnet50",
        model=model,
        input_size=INPUT_SIZE,
        labels=labels,
        preprocess=contract_preprocessor(contract),
        preprocessing=contract.normalization,
        details={"weights": source},
        contract=contract,
    )


def _cached_weights() -> str:
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    path = os.path.join(keras_home, "models", WEIGHTS_FILE)
    return path if os.path.isfile(path) else ""


def _build(keras: Any, path: str) -> tuple[Any, str]:
    if path:
        log.info("loading ResNet50 weights from %s", path)
        return keras.applications.ResNet50(weights=path), path
    try:
        log.info("no ResNet50 weights on disk; trying Keras's download")
        return keras.applications.ResNet50(weights="imagenet"), "imagenet download"
    except Exception as exc:  # the download fails in many ways offline
        raise ModelLoadError(
            "ResNet50 needs ImageNet weights and none could be found or downloaded "
            f"({type(exc).__name__}: {exc}). Set MODEL_WEIGHTS to the path of {WEIGHTS_FILE}, "
            "put that file in ~/.keras/models/, set MODEL_WEIGHTS=random for timing runs, "
            "or choose another MODEL."
        ) from exc
