"""Reference preprocessing, written from each model family's published evaluation code, not from
imaging.py: the tests hold the web tier's pixels against these.

Each reference takes the full-resolution upright photo (uint8 RGB, no draft decoding) and
follows its source's steps literally, in two steps where the source has two (crop, then resize),
with that source's own integer rounding. Resampling uses Pillow's filters (the ones torchvision
uses on PIL images); `tf_resize` is TensorFlow's own resize, to check that the kernels agree.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}

# tensorflow/tpu models/official/efficientnet/preprocessing.py: "CROP_PADDING = 32", the eval
# crop is image_size / (image_size + CROP_PADDING) of the shorter side: 224 / 256 = 0.875.
EFFICIENTNET_CROP_PADDING = 32


def _resize(pixels: np.ndarray, width: int, height: int, interpolation: str) -> np.ndarray:
    image = Image.fromarray(pixels)
    return np.asarray(image.resize((width, height), FILTERS[interpolation]))


def efficientnet_eval(pixels: np.ndarray, image_size: int = 224, interpolation: str = "bicubic") -> np.ndarray:
    """TF EfficientNet `_decode_and_center_crop`: a centred square of image_size / (image_size + 32)
    of the shorter side, offsets rounded up, then `resize_bicubic` to image_size x image_size."""
    height, width = pixels.shape[:2]
    crop = int(image_size / (image_size + EFFICIENTNET_CROP_PADDING) * min(height, width))
    top = ((height - crop) + 1) // 2
    left = ((width - crop) + 1) // 2
    window = pixels[top:top + crop, left:left + crop]
    return _resize(np.ascontiguousarray(window), image_size, image_size, interpolation)


def torchvision_eval(pixels: np.ndarray, resize: int = 256, crop: int = 224,
                     interpolation: str = "bilinear") -> np.ndarray:
    """torchvision `Resize(256)` then `CenterCrop(224)` (the ImageNet reference scripts' eval).

    Resize: the shorter side becomes `resize`, the longer int(resize * long / short).
    CenterCrop: top = int(round((h - crop) / 2)), left likewise.
    """
    height, width = pixels.shape[:2]
    if width <= height:
        new_w, new_h = resize, int(resize * height / width)
    else:
        new_w, new_h = int(resize * width / height), resize
    resized = _resize(pixels, new_w, new_h, interpolation)
    top = int(round((new_h - crop) / 2.0))
    left = int(round((new_w - crop) / 2.0))
    return resized[top:top + crop, left:left + crop]


def squash(pixels: np.ndarray, height: int, width: int, interpolation: str = "bilinear") -> np.ndarray:
    """Each side scaled to the input, aspect ratio ignored (Keras `load_img(target_size=...)`)."""
    return _resize(pixels, width, height, interpolation)


def letterbox(pixels: np.ndarray, height: int, width: int, interpolation: str = "bilinear",
              pad_value: int = 0) -> np.ndarray:
    """YOLOv5's `letterbox`: scale r = min(H/h, W/w), new size round(side * r), padding split
    round(d - 0.1) before and round(d + 0.1) after, filled with `pad_value`."""
    src_h, src_w = pixels.shape[:2]
    ratio = min(height / src_h, width / src_w)
    new_w, new_h = int(round(src_w * ratio)), int(round(src_h * ratio))
    new_w, new_h = max(1, min(width, new_w)), max(1, min(height, new_h))
    resized = _resize(pixels, new_w, new_h, interpolation)
    dw, dh = (width - new_w) / 2, (height - new_h) / 2
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    padded = np.pad(resized, ((top, bottom), (left, right), (0, 0)), constant_values=pad_value)
    assert padded.shape[:2] == (height, width)
    return padded


def tf_resize(pixels: np.ndarray, height: int, width: int, method: str, antialias: bool) -> np.ndarray:
    """TensorFlow's `tf.image.resize` (half-pixel centres), rounded back to uint8."""
    import tensorflow as tf

    resized = tf.image.resize(pixels[None].astype(np.float32), (height, width), method=method, antialias=antialias)
    return np.clip(np.rint(resized.numpy()[0]), 0, 255).astype(np.uint8)


def efficientnet_eval_tf(pixels: np.ndarray, image_size: int = 224, antialias: bool = True) -> np.ndarray:
    """`efficientnet_eval` with TensorFlow doing the bicubic resize, as the TF reference code does."""
    height, width = pixels.shape[:2]
    crop = int(image_size / (image_size + EFFICIENTNET_CROP_PADDING) * min(height, width))
    top, left = ((height - crop) + 1) // 2, ((width - crop) + 1) // 2
    return tf_resize(pixels[top:top + crop, left:left + crop], image_size, image_size, "bicubic", antialias)
