"""The tiny classifier as BentoML recommends serving an image model: one service, adaptive batching.

`@bentoml.api(batchable=True)` makes BentoML collect concurrent calls into one list (at most
max_batch_size, waiting at most max_latency_ms); a PIL image parameter makes the route take a
multipart upload whose field is the parameter's name, `image`. Run by bench/peers.py:
    bentoml serve bench.peer_services.bentoml_service:TinyService --port N
"""
from __future__ import annotations

import io
import os
from typing import Any

import bentoml
import numpy as np
from PIL.Image import Image

from bench.peer_services.common import TinyClassifier, decode

WORKERS = int(os.environ.get("PEER_WORKERS", "2"))
BATCH = int(os.environ.get("PEER_MAX_BATCH", "32"))


@bentoml.service(
    workers=WORKERS,
    # 32 clients at once (and their retries) must all be admitted and answered in time.
    traffic={"timeout": 60, "max_concurrency": 256},
)
class TinyService:
    def __init__(self) -> None:
        self.classifier = TinyClassifier()

    @bentoml.api(route="/predict", batchable=True, max_batch_size=BATCH,
                 max_latency_ms=int(os.environ.get("PEER_MAX_LATENCY_MS", "1000")))
    def predict(self, image: list[Image]) -> list[dict[str, Any]]:
        # BentoML hands over opened PIL images; re-encoding would cost work this project does
        # not do, so the upload's own bytes (kept by PIL in `fp`) are decoded like the project's.
        pixels = np.stack([decode(_original_bytes(im)) for im in image])
        return self.classifier.predict(pixels)


def _original_bytes(image: Image) -> bytes:
    # PIL keeps the file it opened lazily (Starlette's spooled upload, in memory up to 1 MB).
    fp = getattr(image, "fp", None)
    if fp is not None and hasattr(fp, "seek") and hasattr(fp, "read"):
        fp.seek(0)
        return fp.read()
    buffer = io.BytesIO()
    image.save(buffer, format=image.format or "PNG")
    return buffer.getvalue()
