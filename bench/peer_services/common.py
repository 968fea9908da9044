"""What every peer does per request, shared so that the work is the same as this project's.

The peers decode with this project's own `imaging.decode_image` (Pillow, JPEG draft mode,
EXIF orientation, bilinear resize to 224x224), run the same .keras model on a batch with the
same "unit" preprocessing, and answer the same top-5 JSON as POST /predict.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

PROJECT = Path(__file__).resolve().parents[2]

from keras_rest_api.imaging.decode import decode_image  # noqa: E402  (Pillow + numpy only)

SIZE = (224, 224)
MAX_PIXELS = 50_000_000  # settings.MAX_IMAGE_PIXELS default
TOP_K = 5


def decode(data: bytes) -> np.ndarray:
    """uint8 RGB pixels (224, 224, 3), exactly as this project's web tier decodes an upload."""
    return decode_image(data, SIZE, MAX_PIXELS)


class TinyClassifier:
    """The .keras model named by PEER_MODEL with its labels (PEER_LABELS)."""

    def __init__(self) -> None:
        import keras

        self.model = keras.saving.load_model(os.environ["PEER_MODEL"], compile=False)
        self.labels = Path(os.environ["PEER_LABELS"]).read_text().split()
        self.predict(np.zeros((1, *SIZE, 3), np.uint8))  # warm up: the first call traces the graph

    def predict(self, pixels: np.ndarray) -> list[dict[str, Any]]:
        """One top-5 answer per image of a (N, 224, 224, 3) uint8 batch."""
        scores = np.asarray(self.model.predict_on_batch(pixels.astype(np.float32) * np.float32(1 / 255)))
        answers = []
        for row in scores:
            top = np.argsort(-row, kind="stable")[:TOP_K]
            answers.append({"success": True, "predictions": [
                {"label": self.labels[i], "probability": float(row[i])} for i in top]})
        return answers
