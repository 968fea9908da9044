"""The float input a model receives equals Keras's own preprocess_input and the explicit formulas.

The model under test is a real saved Keras model that returns its input (a Reshape of the
pixels to one row): what `LoadedModel.predict` returns is exactly the float32 input the
contract's channel order and normalisation produced, through the same path the model server
takes (repository -> config.json -> contract -> preprocessing -> predict_on_batch).

Tolerance: 1e-5 absolute plus 1e-6 relative (float32 has 24 bits of mantissa: values up to
~150 in caffe and raw modes carry ~1e-5 of rounding; the formulas differ only in rounding).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from keras.applications import imagenet_utils  # noqa: E402

from keras_rest_api.models import load_model, open_repository  # noqa: E402

SIDE = 16
ATOL, RTOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def identity_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    inputs = keras.Input((SIDE, SIDE, 3))
    outputs = keras.layers.Reshape((SIDE * SIDE * 3,))(inputs)
    path = tmp_path_factory.mktemp("identity") / "model.keras"
    keras.Model(inputs, outputs).save(path)
    return str(path)


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    # Every uint8 value at least once, in every channel, plus the extremes in one image.
    rng = np.random.default_rng(11)
    batch = rng.integers(0, 256, (4, SIDE, SIDE, 3), dtype=np.uint8)
    batch[0] = np.arange(256, dtype=np.uint8).reshape(SIDE, SIDE, 1)
    batch[1, ..., :] = np.array([0, 128, 255], np.uint8)
    return batch


def _received(tmp_path: Path, identity_model: str, input_section: dict[str, Any],
              preprocessing: dict[str, Any], pixels: np.ndarray) -> np.ndarray:
    """What the model receives for `pixels` under this config.json, as (N, H, W, 3)."""
    folder = tmp_path / "repo" / "identity"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.keras").symlink_to(identity_model)
    (folder / "config.json").write_text(json.dumps({"input": input_section, "preprocessing": preprocessing}))
    loaded = open_repository({"MODEL_REPOSITORY": str(tmp_path / "repo")}).load("identity", "1")
    received = loaded.predict(pixels)
    assert received.dtype == np.float32
    return received.reshape(pixels.shape)


def _keras(pixels: np.ndarray, mode: str) -> np.ndarray:
    return imagenet_utils.preprocess_input(pixels.astype(np.float32), data_format="channels_last", mode=mode)


X = np.float64  # the explicit formulas are evaluated in float64, then compared


@pytest.mark.parametrize("mode, channel_order, explicit", [
    ("tf", "RGB", lambda p: p.astype(X) / 127.5 - 1.0),
    ("torch", "RGB", lambda p: (p.astype(X) / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]),
    ("caffe", "BGR", lambda p: p[..., ::-1].astype(X) - [103.939, 116.779, 123.68]),
])
def test_keras_modes_match_preprocess_input(tmp_path: Path, identity_model: str, pixels: np.ndarray,
                                           mode: str, channel_order: str, explicit: Any) -> None:
    received = _received(tmp_path, identity_model, {"channel_order": channel_order},
                         {"resize": "squash", "normalization": mode}, pixels)
    np.testing.assert_allclose(received, _keras(pixels, mode), atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(received, explicit(pixels), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("mode, explicit", [
    ("raw", lambda p: p.astype(X)),
    ("unit", lambda p: p.astype(X) / 255.0),
])
def test_raw_and_unit(tmp_path: Path, identity_model: str, pixels: np.ndarray, mode: str, explicit: Any) -> None:
    received = _received(tmp_path, identity_model, {}, {"normalization": mode}, pixels)
    np.testing.assert_allclose(received, explicit(pixels), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("channel_order", ["RGB", "BGR"])
def test_mean_std_in_the_models_channel_order(tmp_path: Path, identity_model: str, pixels: np.ndarray,
                                             channel_order: str) -> None:
    mean, std = [10.0, 127.0, 200.5], [2.0, 128.0, 58.395]
    received = _received(tmp_path, identity_model, {"channel_order": channel_order},
                         {"normalization": "mean_std", "mean": mean, "std": std}, pixels)
    ordered = pixels if channel_order == "RGB" else pixels[..., ::-1]
    np.testing.assert_allclose(received, (ordered.astype(X) - mean) / std, atol=ATOL, rtol=RTOL)


def test_mean_std_with_torch_statistics_equals_torch_mode(tmp_path: Path, identity_model: str,
                                                         pixels: np.ndarray) -> None:
    # ImageNet mean/std written in 0..255 units is Keras's "torch" mode.
    mean = [0.485 * 255, 0.456 * 255, 0.406 * 255]
    std = [0.229 * 255, 0.224 * 255, 0.225 * 255]
    received = _received(tmp_path, identity_model, {}, {"normalization": "mean_std", "mean": mean, "std": std},
                         pixels)
    np.testing.assert_allclose(received, _keras(pixels, "torch"), atol=ATOL, rtol=RTOL)


def test_bgr_channel_order_reverses_the_channels_before_raw(tmp_path: Path, identity_model: str,
                                                           pixels: np.ndarray) -> None:
    received = _received(tmp_path, identity_model, {"channel_order": "BGR"}, {"normalization": "raw"}, pixels)
    np.testing.assert_array_equal(received, pixels[..., ::-1].astype(np.float32))


def test_efficientnet_lite0_receives_googles_reference_normalisation(pixels: np.ndarray) -> None:
    # The built-in entry (mean_std 127/128), through the same LoadedModel preprocessing.
    loaded = load_model({"MODEL": "efficientnet_lite0", "MODEL_WEIGHTS": "random"})
    np.testing.assert_allclose(loaded.preprocess(pixels), (pixels.astype(X) - 127.0) / 128.0, atol=ATOL, rtol=RTOL)


def test_resnet50_receives_keras_resnet50_preprocess_input(pixels: np.ndarray) -> None:
    # The built-in entry (caffe on BGR) against the reference Keras ships with the model.
    from keras.applications import resnet50

    loaded = load_model({"MODEL": "resnet50", "MODEL_WEIGHTS": "random"})
    assert loaded.contract.channel_order == "BGR" and loaded.contract.normalization == "caffe"
    expected = resnet50.preprocess_input(pixels.astype(np.float32))
    np.testing.assert_allclose(loaded.preprocess(pixels), expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("mode", ["raw", "unit", "tf", "torch", "caffe"])
def test_legacy_model_preprocessing_modes_match_preprocess_input(tmp_path: Path, identity_model: str,
                                                                pixels: np.ndarray, mode: str) -> None:
    # MODEL=<path>.keras with MODEL_PREPROCESSING, as before the repository existed.
    loaded = load_model({"MODEL": identity_model, "MODEL_PREPROCESSING": mode})
    received = loaded.predict(pixels).reshape(pixels.shape)
    expected = {"raw": pixels.astype(np.float32), "unit": pixels.astype(X) / 255.0}.get(mode)
    if expected is None:
        expected = _keras(pixels, mode)
    np.testing.assert_allclose(received, expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("mode", ["raw", "unit", "tf", "torch", "caffe"])
def test_one_pass_normalisers_are_bit_identical_to_the_plain_formulas(mode: str) -> None:
    """The normalisers cast inside their first ufunc and work in place (one float array per batch,
    not two); the numbers must be exactly those of casting first and computing after."""
    from keras_rest_api.models import preprocessing

    f32 = np.float32
    batch = np.random.default_rng(7).integers(0, 256, (3, 20, 24, 3), dtype=np.uint8)
    plain = {
        "raw": lambda x: x.astype(f32),
        "unit": lambda x: x.astype(f32) * f32(1 / 255),
        "tf": lambda x: x.astype(f32) * f32(1 / 127.5) - f32(1),
        "torch": lambda x: (x.astype(f32) * f32(1 / 255) - preprocessing.IMAGENET_MEAN_RGB)
        / preprocessing.IMAGENET_STD_RGB,
        "caffe": lambda x: x[..., ::-1].astype(f32) - preprocessing.CAFFE_MEAN_BGR,
    }[mode](batch)
    got = preprocessing.PREPROCESSORS[mode](batch)
    assert got.dtype == np.float32 and got.shape == batch.shape
    np.testing.assert_array_equal(got, plain)
    mean, std = (127.0, 120.5, 3.0), (128.0, 64.0, 0.5)
    scale = f32(1) / np.asarray(std, f32)
    np.testing.assert_array_equal(preprocessing.mean_std(mean, std)(batch),
                                  (batch.astype(f32) - np.asarray(mean, f32)) * scale)
