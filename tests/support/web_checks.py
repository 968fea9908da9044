"""Uploads and answer checks shared by the web-tier tests (Flask's test client) and the system
tests (real HTTP): a small random PNG, a multipart POST /predict, a JSON error, top-k predictions."""
from __future__ import annotations

import io
from typing import Any

import numpy as np
from flask.testing import FlaskClient
from PIL import Image


def png_bytes(seed: int = 0, size: tuple[int, int] = (48, 40)) -> bytes:
    """A PNG of random pixels, `size` = (width, height); the same bytes for the same seed."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def post_image(client: FlaskClient, data: bytes, filename: str = "x.png", **form: Any):
    """POST /predict with `data` as the multipart field `image` (and any other form fields)."""
    return client.post("/predict", data={"image": (io.BytesIO(data), filename), **form},
                       content_type="multipart/form-data")


def assert_json_error(response, status: int) -> dict:
    """A Flask test response that is a JSON error of `status` (never an HTML page); its body."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json", response.headers
    text = response.get_data(as_text=True)
    assert "<html" not in text.lower() and "<!doctype" not in text.lower()
    body = response.get_json()
    assert body["success"] is False
    assert isinstance(body["error"], str) and body["error"].strip()
    return body


def assert_predictions(body: dict, count: int) -> list[dict]:
    """`count` predictions, each a label and a probability, most probable first."""
    assert body["success"] is True
    predictions = body["predictions"]
    assert len(predictions) == count
    assert all(set(p) == {"label", "probability"} for p in predictions)
    probabilities = [p["probability"] for p in predictions]
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(0.0 <= p <= 1.0 for p in probabilities)
    return predictions
