"""ResNet50 (the tutorial's model): Keras's ImageNet classifier with caffe preprocessing."""
from __future__ import annotations

import logging
import os
from typing import Any, Mapping

from models import LoadedModel, ModelLoadError
from models.imagenet import imagenet_labels
from models.preprocessing import caffe

log = logging.getLogger(__name__)

WEIGHTS_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
INPUT_SIZE = (224, 224)
# ImageNet evaluation as the ResNet authors and Keras's examples run it: shorter side to 256,
# centre 224 (0.875), bilinear.
RESIZE, CROP_FRACTION, INTERPOLATION = "center_crop", 0.875, "bilinear"


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
    return LoadedModel(
        name="resnet50",
        model=model,
        input_size=INPUT_SIZE,
        labels=imagenet_labels(),
        preprocess=caffe,
        preprocessing="caffe",
        details={"weights": source},
        resize=RESIZE,
        crop_fraction=CROP_FRACTION,
        interpolation=INTERPOLATION,
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
