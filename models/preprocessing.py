"""Vectorised preprocessing: a whole batch of uint8 RGB pixels to float32 model input.

The web tier sends raw pixels so that this, the model-specific part, runs once per batch in
the model server. The modes are those of `keras.applications.imagenet_utils`.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

IMAGENET_MEAN_RGB = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD_RGB = np.array([0.229, 0.224, 0.225], dtype=np.float32)
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)


def raw(pixels: np.ndarray) -> np.ndarray:
    """0..255 as float32; for models that normalise inside themselves."""
    return pixels.astype(np.float32)


def unit(pixels: np.ndarray) -> np.ndarray:
    """Scaled to 0..1."""
    return pixels.astype(np.float32) * np.float32(1.0 / 255.0)


def tf_mode(pixels: np.ndarray) -> np.ndarray:
    """Scaled to -1..1 (Keras "tf" mode: MobileNet, Inception)."""
    return pixels.astype(np.float32) * np.float32(1.0 / 127.5) - np.float32(1.0)


def torch_mode(pixels: np.ndarray) -> np.ndarray:
    """0..1, then ImageNet mean and standard deviation per RGB channel (Keras "torch" mode)."""
    return (unit(pixels) - IMAGENET_MEAN_RGB) / IMAGENET_STD_RGB


def caffe(pixels: np.ndarray) -> np.ndarray:
    """RGB to BGR, then the ImageNet mean subtracted per channel, no scaling (ResNet50, VGG)."""
    return pixels[..., ::-1].astype(np.float32) - CAFFE_MEAN_BGR


PREPROCESSORS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "raw": raw,
    "unit": unit,
    "tf": tf_mode,
    "torch": torch_mode,
    "caffe": caffe,
}


def get_preprocessor(mode: str) -> Callable[[np.ndarray], np.ndarray]:
    """The preprocessing function called `mode`, or a ValueError that lists the valid ones."""
    try:
        return PREPROCESSORS[mode]
    except KeyError:
        raise ValueError(
            f"Unknown preprocessing mode {mode!r}; expected one of {', '.join(PREPROCESSORS)}. "
            "Set MODEL_PREPROCESSING to the mode the model was trained with."
        ) from None
