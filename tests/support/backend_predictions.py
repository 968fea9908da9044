"""Print, as one JSON line, the predictions of the tiny model and EfficientNet-Lite0 on fixed
photographs under whatever KERAS_BACKEND this process has (a backend is fixed per process).

Run by tests/system/test_backends.py once per backend; the test compares the lines.
Usage, from the project root: KERAS_BACKEND=jax python -m tests.support.backend_predictions TINY_DIR CACHE_DIR
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image



if os.environ.get("WITHOUT_TENSORFLOW") == "1":
    # As on a GPU machine with only JAX or PyTorch: any `import tensorflow` raises ImportError
    # (and importlib.util.find_spec("tensorflow") answers None, as torch checks).
    sys.modules["tensorflow"] = None  # type: ignore[assignment]

PHOTOS = ("chelsea", "coffee", "astronaut")


def photos(size: tuple[int, int]) -> np.ndarray:
    """Fixed photographs (scikit-image's), resized as the web tier does, as one uint8 batch."""
    from skimage import data

    return np.stack([np.asarray(Image.fromarray(getattr(data, name)()).convert("RGB")
                                .resize(size[::-1], Image.BILINEAR), dtype=np.uint8) for name in PHOTOS])


def tensorflow_loaded() -> bool:
    """Whether any module loaded in this process comes from TensorFlow's installed files: the
    blocked name alone says nothing, since it is set to None above and read back."""
    # Found on the path, not through its distribution's name (tensorflow, tensorflow-cpu, ...).
    roots = tuple(os.path.realpath(os.path.join(entry, "tensorflow")) + os.sep for entry in sys.path
                  if os.path.isfile(os.path.join(entry, "tensorflow", "__init__.py")))
    return bool(roots) and any(os.path.realpath(getattr(module, "__file__", None) or os.sep).startswith(roots)
                               for module in list(sys.modules.values()) if module is not None)


def main() -> None:
    from keras_rest_api.model_server.main import describe_device
    from keras_rest_api.models import load_model

    tiny_dir, cache_dir = Path(sys.argv[1]), sys.argv[2]
    import keras

    # What Keras itself runs on, not what this process was asked for.
    out: dict[str, Any] = {"backend": keras.backend.backend(), "device": describe_device()}
    for name, config in (
        ("tiny", {"MODEL": str(tiny_dir / "tiny.keras"), "MODEL_LABELS": str(tiny_dir / "tiny-labels.txt"),
                  "MODEL_PREPROCESSING": "unit"}),
        ("efficientnet_lite0", {"MODEL": "efficientnet_lite0", "MODEL_WEIGHTS": "", "MODEL_CACHE_DIR": cache_dir}),
    ):
        model = load_model(config)
        probabilities = model.predict(photos(model.input_size))
        out[name] = probabilities.astype(float).tolist()
        # The tensor type holding the model's weights is the backend's own (a jax Array, a torch Parameter).
        value = model.model.weights[0].value
        out[f"{name}_weights"] = f"{type(value).__module__}.{type(value).__qualname__}"
    out["tensorflow_imported"] = tensorflow_loaded()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
