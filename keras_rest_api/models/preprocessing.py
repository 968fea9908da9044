"""Vectorised preprocessing: a whole batch of uint8 RGB pixels to float32 model input.

The web tier sends raw RGB pixels already at the model's input size (it applies the resize
policy of the model's contract), so that this, the per-model normalisation, runs once per
batch in the model server. The modes are those of `keras.applications.imagenet_utils`
(raw, unit, tf, torch, caffe) plus an explicit per-channel mean/std in 0..255 units.

Channel order: the model receives its channels in the contract's `channel_order`, reordered
before normalisation. "torch" constants are the RGB ImageNet statistics, so "torch" needs RGB;
"caffe" is Keras's caffe mode, defined on BGR input (the mean pixel is given in BGR order), so
"caffe" needs BGR — `preprocessor("caffe", "BGR")` equals `preprocess_input(x, mode="caffe")`
on the RGB pixels. `mean`/`std` of "mean_std" are listed in the model's channel order.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

IMAGENET_MEAN_RGB = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD_RGB = np.array([0.229, 0.224, 0.225], dtype=np.float32)
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)

Preprocessor = Callable[[np.ndarray], np.ndarray]

# The channel order each mode's constants are written for; None: any order.
REQUIRED_CHANNEL_ORDER = {"raw": None, "unit": None, "tf": None, "mean_std": None, "torch": "RGB", "caffe": "BGR"}
# The channel order a mode implies when a config leaves it out.
DEFAULT_CHANNEL_ORDER = {"caffe": "BGR"}


# Each mode makes one float32 array and works in it: the uint8 -> float32 cast happens inside
# the first ufunc (exact, as astype is), and later steps run in place. The naive
# `pixels.astype(np.float32) * k` allocates a second batch-sized float array; for a batch of 32
# at 224x224 that is 19 MB more to fault in and write, about a third of a tiny model's time.
# Values are bit-identical to the naive expressions (tests/unit/models/test_normalization.py).


def raw(pixels: np.ndarray) -> np.ndarray:
    """0..255 as float32; for models that normalise inside themselves."""
    return pixels.astype(np.float32)


def unit(pixels: np.ndarray) -> np.ndarray:
    """Scaled to 0..1."""
    return np.multiply(pixels, np.float32(1.0 / 255.0), dtype=np.float32)


def tf_mode(pixels: np.ndarray) -> np.ndarray:
    """Scaled to -1..1 (Keras "tf" mode: MobileNet, Inception)."""
    out = np.multiply(pixels, np.float32(1.0 / 127.5), dtype=np.float32)
    out -= np.float32(1.0)
    return out


def torch_mode(pixels: np.ndarray) -> np.ndarray:
    """0..1, then ImageNet mean and standard deviation per RGB channel (Keras "torch" mode)."""
    out = unit(pixels)
    out -= IMAGENET_MEAN_RGB
    out /= IMAGENET_STD_RGB
    return out


def caffe(pixels: np.ndarray) -> np.ndarray:
    """RGB to BGR, then the ImageNet mean subtracted per channel, no scaling (ResNet50, VGG).

    The legacy entry point (MODEL_PREPROCESSING=caffe): RGB pixels in, Keras's caffe mode out.
    """
    return _caffe_on_bgr(pixels[..., ::-1])


def _caffe_on_bgr(pixels: np.ndarray) -> np.ndarray:
    return np.subtract(pixels, CAFFE_MEAN_BGR, dtype=np.float32)


def mean_std(mean: Sequence[float], std: Sequence[float]) -> Preprocessor:
    """(x - mean) / std per channel, x in 0..255: e.g. mean 127, std 128 for EfficientNet-Lite."""
    mean_array = np.asarray(mean, dtype=np.float32).reshape(3)
    # Multiplying by the reciprocal is one pass cheaper than dividing; within 1 ulp of (x-m)/s.
    scale = (np.float32(1.0) / np.asarray(std, dtype=np.float32)).reshape(3)

    def normalise(pixels: np.ndarray) -> np.ndarray:
        out = np.subtract(pixels, mean_array, dtype=np.float32)
        out *= scale
        return out

    return normalise


# The legacy MODEL_PREPROCESSING modes: RGB pixels in, each mode as Keras defines it.
PREPROCESSORS: dict[str, Preprocessor] = {
    "raw": raw,
    "unit": unit,
    "tf": tf_mode,
    "torch": torch_mode,
    "caffe": caffe,
}


def get_preprocessor(mode: str) -> Preprocessor:
    """The preprocessing function called `mode`, or a ValueError that lists the valid ones."""
    try:
        return PREPROCESSORS[mode]
    except KeyError:
        raise ValueError(
            f"Unknown preprocessing mode {mode!r}; expected one of {', '.join(PREPROCESSORS)}. "
            "Set MODEL_PREPROCESSING to the mode the model was trained with."
        ) from None


def check_channel_order(normalization: str, channel_order: str) -> None:
    """ValueError when `normalization`'s constants are written for the other channel order."""
    required = REQUIRED_CHANNEL_ORDER.get(normalization)
    if required is not None and channel_order != required:
        raise ValueError(
            f"normalization {normalization!r} is defined on {required} input (its constants are in "
            f"{required} order), but channel_order is {channel_order!r}. Set channel_order to "
            f"{required!r}, or use normalization \"mean_std\" with mean and std in {channel_order} order."
        )


def preprocessor(normalization: str, channel_order: str = "RGB", mean: Sequence[float] = (0.0, 0.0, 0.0),
                 std: Sequence[float] = (1.0, 1.0, 1.0)) -> Preprocessor:
    """uint8 RGB pixels (N, H, W, 3) -> float32 model input: channels reordered, then normalised."""
    check_channel_order(normalization, channel_order)
    if normalization == "mean_std":
        normalise = mean_std(mean, std)
    elif normalization == "caffe":
        normalise = _caffe_on_bgr
    elif normalization in PREPROCESSORS:
        normalise = PREPROCESSORS[normalization]
    else:
        raise ValueError(f"Unknown normalization {normalization!r}; expected one of "
                         f"{', '.join([*PREPROCESSORS, 'mean_std'])}.")
    if channel_order == "RGB":
        return normalise
    if channel_order != "BGR":
        raise ValueError(f"channel_order {channel_order!r} is not RGB or BGR.")

    def reordered(pixels: np.ndarray) -> np.ndarray:
        return normalise(pixels[..., ::-1])

    return reordered
