"""Every Keras backend: the same predictions, and the model server's tests, on tensorflow, jax, torch.

A Keras backend is fixed per process, so each backend runs in a subprocess of its own. JAX and
PyTorch run with `import tensorflow` made impossible (WITHOUT_TENSORFLOW=1), as on a GPU
machine that has only them. ./test.sh installs both (pyproject.toml extras jax and torch).

Tolerance: probabilities within 1e-4 of TensorFlow's and the same top-1 class. Measured on
this CPU: at most 1.6e-6 apart (tiny model and EfficientNet-Lite0 on three photographs).
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from tests.support.harness import PROJECT

BACKENDS = ("tensorflow", "jax", "torch")
TOLERANCE = 1e-4
PACKAGE = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
# The top-level module of the tensor type a backend keeps a model's weights in.
WEIGHT_MODULES = {"tensorflow": ("tensorflow",), "jax": ("jax", "jaxlib"), "torch": ("torch",)}

pytestmark = pytest.mark.backends


def current_backend() -> str:
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def require(backend: str) -> None:
    if importlib.util.find_spec(PACKAGE[backend]) is None:
        pytest.fail(f"KERAS_BACKEND={backend} needs the {PACKAGE[backend]} package, which is not installed in "
                    f"{sys.prefix}. Run ./test.sh, which installs the extras jax and torch (EXTRAS=test,bench,jax,torch).")


def run_under(backend: str, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2",
           "WITHOUT_TENSORFLOW": "0" if backend == "tensorflow" else "1"}
    return subprocess.run([sys.executable, *args], cwd=PROJECT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def predictions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Each backend's predictions, from a subprocess per backend (sharing one converted-weights cache)."""
    for backend in BACKENDS:
        require(backend)
    directory = tmp_path_factory.mktemp("backends")
    built = run_under("tensorflow", ["-m", "bench.tiny_model", str(directory)], 300)
    assert built.returncode == 0, built.stderr[-3000:]
    out = {}
    for backend in BACKENDS:
        done = run_under(backend, ["-m", "tests.support.backend_predictions", str(directory), str(directory / "cache")], 600)
        assert done.returncode == 0, f"{backend}: {done.stderr[-3000:]}"
        out[backend] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize("model", ["tiny", "efficientnet_lite0"])
def test_a_backend_predicts_what_tensorflow_predicts(predictions: dict[str, Any], backend: str, model: str) -> None:
    reference = np.array(predictions["tensorflow"][model])
    other = np.array(predictions[backend][model])
    assert other.shape == reference.shape
    assert np.abs(other - reference).max() <= TOLERANCE
    assert (other.argmax(axis=1) == reference.argmax(axis=1)).all()


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_jax_and_torch_run_without_tensorflow(predictions: dict[str, Any], backend: str) -> None:
    # Each figure comes from inside the process: keras.backend.backend(), the model server's
    # describe_device (the heartbeat's device), the type of the loaded weights, sys.modules.
    ran = predictions[backend]
    assert ran["backend"] == backend, ran["backend"]
    assert ran["device"].startswith(f"{backend}:") and not ran["device"].endswith(":unknown"), ran["device"]
    for model in ("tiny", "efficientnet_lite0"):
        assert ran[f"{model}_weights"].split(".")[0] in WEIGHT_MODULES[backend], ran[f"{model}_weights"]
    assert ran["tensorflow_imported"] is False


def test_tensorflow_runs_on_tensorflow(predictions: dict[str, Any]) -> None:
    # The control: the same figures do see TensorFlow where it runs.
    ran = predictions["tensorflow"]
    assert ran["backend"] == "tensorflow" and ran["device"].startswith("tensorflow:")
    assert ran["tensorflow_imported"] is True
    assert ran["tiny_weights"].split(".")[0] in WEIGHT_MODULES["tensorflow"], ran["tiny_weights"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_model_server_tests_pass_on_every_backend(backend: str) -> None:
    if backend == current_backend():
        pytest.skip(f"this run is itself on {backend}: tests/unit/model_server/test_model_server.py runs here "
                    "directly")
    require(backend)
    done = run_under(backend, ["-m", "pytest", "tests/unit/model_server/test_model_server.py",
                               "tests/unit/models/test_precision.py",
                               "-q", "-p", "no:cacheprovider"], 900)
    assert done.returncode == 0, f"KERAS_BACKEND={backend}:\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
