"""MODEL_PRECISION: the same model computing in bfloat16, its outputs still float32 probabilities."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from keras_rest_api.models import ModelLoadError, load_model
from keras_rest_api.models.precision import with_precision


def _pixels(n: int) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def test_float32_is_the_model_as_loaded(tiny_model: Any) -> None:
    assert with_precision(tiny_model.model, "float32") is tiny_model.model


def test_bfloat16_computes_inside_in_bfloat16_and_answers_in_float32(tiny_model_files: dict[str, str]) -> None:
    exact = load_model(tiny_model_files)
    fast = load_model({**tiny_model_files, "MODEL_PRECISION": "bfloat16"})
    policies = [layer.dtype_policy.name for layer in fast.model.layers]
    assert policies[0] == "float32"  # the input
    assert set(policies[1:-1]) == {"mixed_bfloat16"}
    assert policies[-1] == "float32"  # the softmax output, at full precision
    assert fast.metadata()["precision"] == "bfloat16" and exact.metadata()["precision"] == "float32"

    pixels = _pixels(6)
    expected, received = exact.predict(pixels), fast.predict(pixels)
    assert received.dtype == np.float32
    np.testing.assert_allclose(received.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(received, expected, atol=0.05)
    assert not np.array_equal(received, expected)  # it really computed in another precision


def test_an_unknown_precision_says_what_to_set(tiny_model_files: dict[str, str]) -> None:
    with pytest.raises(ModelLoadError, match="MODEL_PRECISION='float16'.*float32, bfloat16"):
        load_model({**tiny_model_files, "MODEL_PRECISION": "float16"})


def test_a_model_without_layer_configuration_is_refused_with_the_fix() -> None:
    import keras

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="Set MODEL_PRECISION=float32"):
        with_precision(Subclassed(), "bfloat16")
