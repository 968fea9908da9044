"""How each Keras backend batches (models/backends.py): the batch sizes the model server warms up,
and JAX's padded batches, which must answer exactly what the unpadded images get."""
from __future__ import annotations

import numpy as np
import pytest

from keras_rest_api.models import backends


@pytest.mark.parametrize("backend, sizes", [("jax", [1, 2, 4, 8, 16, 32]), ("tensorflow", [1, 2, 32]),
                                            ("torch", [1, 2, 32])])
def test_warm_up_covers_every_shape_the_backend_will_run(monkeypatch, backend, sizes):
    monkeypatch.setattr(backends, "backend", lambda: backend)
    assert backends.warm_up_sizes(32) == sizes
    if backend == "jax":  # every batch runs at a size the warm-up compiled
        assert {backends.padded_size(n) for n in range(1, 33)} == set(sizes)
    else:  # run as they come
        assert [backends.padded_size(n) for n in range(1, 33)] == list(range(1, 33))


def test_a_padded_batch_answers_exactly_the_unpadded_images(monkeypatch, tiny_model):
    pixels = np.random.default_rng(5).integers(0, 256, (3, *tiny_model.input_size, 3), dtype=np.uint8)
    plain = tiny_model.predict(pixels)
    monkeypatch.setattr(backends, "backend", lambda: "jax")  # pad 3 -> 4, as on JAX
    assert backends.padded_size(3) == 4
    padded = tiny_model.predict(pixels)
    assert padded.shape == plain.shape
    np.testing.assert_allclose(padded, plain, atol=1e-6)
