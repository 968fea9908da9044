"""The web tier feeds each model its input exactly as the model's contract declares.

Real photographs (scikit-learn's china.jpg and flower.jpg, scikit-image's, matplotlib's Grace
Hopper portrait) go through `imaging.decode.decode_image` and are held against the reference
implementations in tests/support/reference_preprocessing.py, written from each protocol's published code.

Tolerances, on uint8 pixels:
- no draft decoding (photos at their own size): mean |diff| < 0.1; every difference lies in
  the outermost EDGE rows and columns, where one `resize(box=...)` reads the pixels just
  outside the crop that a crop-then-resize cannot see. Squash and letterbox: identical.
- draft decoding (4x enlarged photos as JPEG, libjpeg's DCT scaling then the filter, against a
  full decode then the filter alone): mean |diff| < DRAFT_MEAN, max < DRAFT_MAX.
- kernels against TensorFlow's own antialiased resize: mean < 0.5, max < 20 (the border).
"""
from __future__ import annotations

import io
import os

import matplotlib
import numpy as np
import pytest
from PIL import Image, ImageOps
from skimage import data as skimage_data

from keras_rest_api import settings
from keras_rest_api.errors import ImageError
from keras_rest_api.imaging.decode import (DRAFT_MARGIN, RESAMPLING, Frame, Geometry, decode_image, draft_for,
                                           needed_size, open_image, placement)
from keras_rest_api.models.loading import legacy_contract
from keras_rest_api.models.repository import shipped_config
from keras_rest_api.queue.records import Heartbeat, Job, ModelContract, ServedModel
from tests.support import reference_preprocessing as ref
from tests.support.web_fixtures import make_queue

BIG = 10**9
EDGE = 3  # lanczos reaches 3 source pixels past the window (scaled); bicubic 2, bilinear 1
DRAFT_MEAN, DRAFT_MAX = 1.0, 48
INTERPOLATIONS = tuple(RESAMPLING)
SKLEARN_IMAGES = os.path.join(os.path.dirname(pytest.importorskip("sklearn").__file__), "datasets", "images")
SKIMAGE_DATA = os.path.dirname(skimage_data.__file__)
MPL_DATA = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data")
# The photographs as their files are: three JPEGs, two PNGs; landscape, portrait and square.
PHOTO_FILES = {
    "china": os.path.join(SKLEARN_IMAGES, "china.jpg"),  # 640x427
    "flower": os.path.join(SKLEARN_IMAGES, "flower.jpg"),  # 640x427
    "rocket": os.path.join(SKIMAGE_DATA, "rocket.jpg"),  # 640x427
    "motorcycle": os.path.join(SKIMAGE_DATA, "motorcycle_left.png"),  # 741x500
    "grace_hopper": os.path.join(MPL_DATA, "grace_hopper.jpg"),  # 512x600, portrait
    "astronaut": os.path.join(SKIMAGE_DATA, "astronaut.png"),  # 512x512
}


def photo_bytes(name: str) -> bytes:
    with open(PHOTO_FILES[name], "rb") as f:
        return f.read()


def full_decode(data: bytes) -> np.ndarray:
    """The reference's input: a plain full-resolution decode, upright by Pillow's exif_transpose."""
    return np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))


def encode(pixels: np.ndarray | Image.Image, fmt: str, **params) -> bytes:
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def differences(ours: np.ndarray, reference: np.ndarray) -> np.ndarray:
    assert ours.shape == reference.shape and ours.dtype == reference.dtype == np.uint8
    return np.abs(ours.astype(np.int16) - reference.astype(np.int16))


def crop(height: int, width: int, interpolation: str, fraction: float = 0.875) -> Geometry:
    return Geometry(height, width, "center_crop", fraction, interpolation)


# --- center crop, at the photo's own resolution ----------------------------------------------

@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("name", PHOTO_FILES)
def test_center_crop_matches_tensorflow_efficientnet_eval(name, interpolation):
    pixels = full_decode(photo_bytes(name))
    data = encode(pixels, "PNG")  # losslessly, so nothing but the geometry can differ
    ours = decode_image(data, crop(224, 224, interpolation), BIG)
    reference = ref.efficientnet_eval(pixels, 224, interpolation)
    diff = differences(ours, reference)
    assert diff.mean() < 0.1, f"mean {diff.mean():.3f}"
    # Inside the border the one-step box resize and crop-then-resize are the same computation;
    # except that the box filter's pixel-edge ties can fall either way with the window's offset.
    if interpolation != "box":
        assert diff[EDGE:-EDGE, EDGE:-EDGE].max() == 0


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "lanczos", "hamming", "box"])
@pytest.mark.parametrize("name", ["china", "rocket", "grace_hopper"])
def test_the_jpeg_files_as_they_are_match_the_reference(name, interpolation):
    # As shipped (640x427 and 512x600), none is large enough for a draft with DRAFT_MARGIN 2:
    # what differs is only the border of the one-step box resize.
    data = photo_bytes(name)
    diff = differences(decode_image(data, crop(224, 224, interpolation), BIG),
                       ref.efficientnet_eval(full_decode(data), 224, interpolation))
    assert diff.mean() < DRAFT_MEAN and diff.max() < DRAFT_MAX, f"mean {diff.mean():.3f} max {diff.max()}"


def test_the_default_models_contract_is_its_published_eval_protocol():
    # The built-in entries of the model repository, as the model servers publish them.
    lite0 = shipped_config("efficientnet_lite0", settings.defaults()).contract("1", (224, 224), 1000)
    resnet = shipped_config("resnet50", settings.defaults()).contract("1", (224, 224), 1000)
    assert (lite0.resize, lite0.interpolation) == ("center_crop", "bicubic")
    assert lite0.crop_fraction == 224 / (224 + ref.EFFICIENTNET_CROP_PADDING) == 0.875
    assert (resnet.resize, resnet.crop_fraction, resnet.interpolation) == ("center_crop", 0.875, "bilinear")


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("name", ["china", "flower", "grace_hopper"])
def test_pillow_kernels_agree_with_tensorflows_antialiased_resize(name, interpolation):
    # The references resample with Pillow; TensorFlow's own resize (antialias=True, the
    # kernel scaled when shrinking, as Pillow does) gives the same pixels to rounding.
    pixels = full_decode(photo_bytes(name))
    ours = decode_image(encode(pixels, "PNG"), crop(224, 224, interpolation), BIG)
    side = int(0.875 * min(pixels.shape[:2]))
    top, left = (pixels.shape[0] - side + 1) // 2, (pixels.shape[1] - side + 1) // 2
    tf_pixels = ref.tf_resize(pixels[top:top + side, left:left + side], 224, 224, interpolation, antialias=True)
    diff = differences(ours, tf_pixels)
    assert diff.mean() < 0.5 and diff.max() < 20, f"mean {diff.mean():.3f} max {diff.max()}"


@pytest.mark.parametrize("width, height", [(640, 427), (427, 640), (451, 300), (741, 500), (4032, 3024),
                                           (1080, 1920), (257, 256), (300, 3000)])
def test_the_crop_window_is_torchvisions_resize_256_center_crop_224_up_to_their_roundings(width, height):
    # Both approximate "shorter side to 256, then the centre 224". TF cuts a whole-pixel window
    # (off by < 1 source pixel); torchvision scales to whole pixels (the long side truncated)
    # and crops at rounded offsets (off by < 1 scaled pixel, short / 256 source pixels). Up to
    # half an input pixel apart, which on sharp photos is 1-3.6 mean |diff| per pixel, so the
    # conventions are compared as windows; the web tier follows TF's, the default model's.
    short, long_ = min(width, height), max(width, height)
    scaled_long = int(256 * long_ / short)
    new_w, new_h = (256, scaled_long) if width <= height else (scaled_long, 256)
    top, left = int(round((new_h - 224) / 2.0)), int(round((new_w - 224) / 2.0))
    sx, sy = width / new_w, height / new_h
    torchvision_window = (left * sx, top * sy, (left + 224) * sx, (top + 224) * sy)
    ours = placement(crop(224, 224, "bilinear"), width, height).box
    assert np.allclose(ours, torchvision_window, atol=1 + short / 256), (ours, torchvision_window)


@pytest.mark.parametrize("size", [(224, 160), (160, 224)])
def test_a_non_square_input_is_covered_then_cut_from_the_centre(size):
    data = photo_bytes("china")  # 640x427
    height, width = size
    ours = decode_image(data, crop(height, width, "bicubic"), BIG)
    assert ours.shape == (height, width, 3)
    pixels = full_decode(data)
    left, top, right, bottom = (int(v) for v in placement(crop(height, width, "bicubic"), 640, 427).box)
    # The window has the input's aspect ratio and crop_fraction of the limiting side.
    assert abs((right - left) / (bottom - top) - width / height) < 0.01
    assert (bottom - top == int(0.875 * 427)) or (right - left == int(0.875 * 640))
    reference = np.asarray(Image.fromarray(pixels[top:bottom, left:right]).resize((width, height), Image.Resampling.BICUBIC))
    assert differences(ours, reference).mean() < 0.1


# --- squash and letterbox -------------------------------------------------------------------

@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("name", ["china", "grace_hopper", "motorcycle"])
def test_squash_matches_the_reference(name, interpolation):
    pixels = full_decode(photo_bytes(name))
    ours = decode_image(encode(pixels, "PNG"), Geometry(224, 224, "squash", 1.0, interpolation), BIG)
    assert differences(ours, ref.squash(pixels, 224, 224, interpolation)).max() == 0


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("name, size", [("china", (224, 224)), ("grace_hopper", (224, 224)),
                                        ("motorcycle", (320, 240)), ("astronaut", (200, 300))])
def test_letterbox_matches_yolov5s_letterbox(name, size, interpolation):
    pixels = full_decode(photo_bytes(name))
    height, width = size
    ours = decode_image(encode(pixels, "PNG"), Geometry(height, width, "letterbox", 1.0, interpolation, pad_value=114),
                        BIG)
    reference = ref.letterbox(pixels, height, width, interpolation, pad_value=114)
    assert differences(ours, reference).max() == 0


def test_letterbox_pads_only_the_short_dimension():
    ours = decode_image(photo_bytes("china"), Geometry(224, 224, "letterbox", pad_value=7), BIG)
    content_rows = round(427 * 224 / 640)  # 149
    top = (224 - content_rows) // 2
    assert (ours[:top] == 7).all() and (ours[top + content_rows:] == 7).all()
    assert (ours[top:top + content_rows] != 7).any(axis=-1).mean() > 0.9


def test_a_bare_size_squashes_as_before_contracts():
    data = photo_bytes("china")
    assert np.array_equal(decode_image(data, (224, 224), BIG),
                          decode_image(data, Geometry(224, 224, "squash", 1.0, "bilinear"), BIG))


# --- JPEG draft decoding -------------------------------------------------------------------

@pytest.mark.parametrize("size", [(4000, 3000), (4001, 2999), (3000, 4000), (1000, 130), (8, 8), (17, 9)])
@pytest.mark.parametrize("request_size", [(256, 256), (385, 257), (100, 300), (1, 1), (4000, 4000)])
def test_pillows_draft_never_decodes_below_the_size_asked_for(size, request_size):
    # The property draft_for relies on: Pillow picks the largest of 1/8, 1/4, 1/2, 1 that keeps
    # both sides at least the request (or full size when even that is less).
    image = Image.open(io.BytesIO(encode(Image.new("RGB", size, (90, 140, 200)), "JPEG")))
    image.draft("RGB", request_size)
    decoded = image.size
    for got, full, asked in zip(decoded, size, request_size):
        assert got >= min(full, asked)
    reduction = next(s for s in (8, 4, 2, 1) if -(-size[0] // s) == decoded[0])
    if reduction < 8:  # a larger reduction would have gone below the request
        larger = reduction * 2
        assert any(-(-full // larger) < asked for full, asked in zip(size, request_size))
    image.load()
    assert image.size == decoded


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("size", [(4000, 3000), (4001, 2999), (1000, 4003), (2000, 260)])
@pytest.mark.parametrize("geometry", [crop(224, 224, "bicubic"), crop(224, 160, "bilinear"),
                                      Geometry(224, 224, "squash"), Geometry(224, 224, "letterbox")],
                         ids=["crop", "crop-non-square", "squash", "letterbox"])
def test_draft_keeps_at_least_one_decoded_pixel_per_input_pixel(geometry, size, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    image = open_image(encode(Image.new("RGB", size, (90, 140, 200)), "JPEG", exif=exif), BIG)
    upright = size[::-1] if orientation >= 5 else size
    frame = draft_for(image, geometry, orientation)
    assert frame.size == upright
    decoded = image.size[::-1] if orientation >= 5 else image.size
    where = placement(geometry, *upright)
    left, top, right, bottom = frame.map(where.box)
    assert right - left >= where.size[0] - 1e-6 and bottom - top >= where.size[1] - 1e-6
    assert 0 <= left and 0 <= top and right <= decoded[0] + 1e-6 and bottom <= decoded[1] + 1e-6
    if geometry.resize == "center_crop" and geometry.height == geometry.width:
        # The rule: after draft the shorter side is at least side / crop_fraction.
        assert min(decoded) >= 224 / 0.875
    need = needed_size(geometry, *upright)
    assert all(got >= min(full, DRAFT_MARGIN * n) for got, full, n in zip(decoded, upright, need))
    # ... and it reduced as far as that allows: half the size would fall short on some side.
    assert decoded == upright or any(-(-got // 2) < DRAFT_MARGIN * n for got, n in zip(decoded, need))


def large_jpeg(name: str, orientation: int, trim: tuple[int, int] = (4, 5)) -> tuple[bytes, np.ndarray]:
    """The photo enlarged 4x, its height trimmed odd (a 1/2 draft leaves a partial pixel on that
    axis only, so mapping it onto the wrong side after a turn shows), stored turned the way
    EXIF `orientation` turns back. Returns the JPEG and its full upright decode."""
    pixels = full_decode(photo_bytes(name))
    height, width = pixels.shape[:2]
    large = Image.fromarray(pixels).resize((width * 4 - trim[0], height * 4 - trim[1]), Image.Resampling.LANCZOS)
    undo = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_270}.get(orientation)
    stored = large.transpose(undo) if undo is not None else large
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(stored, "JPEG", quality=95, exif=exif)
    upright = full_decode(data)
    assert upright.shape[:2] == (large.height, large.width)  # exif_transpose undid the turn
    return data, upright


@pytest.mark.parametrize("orientation", [1, 3, 6, 8, 7])
@pytest.mark.parametrize("name", ["china", "grace_hopper", "astronaut"])
def test_drafted_and_rotated_jpegs_match_the_reference_on_a_full_decode(name, orientation):
    data, upright = large_jpeg(name, orientation)
    checks = [
        (crop(224, 224, "bicubic"), ref.efficientnet_eval(upright, 224, "bicubic")),
        (crop(224, 224, "bilinear"), ref.efficientnet_eval(upright, 224, "bilinear")),
        (Geometry(224, 224, "squash"), ref.squash(upright, 224, 224, "bilinear")),
        (Geometry(224, 224, "letterbox", pad_value=114), ref.letterbox(upright, 224, 224, "bilinear", 114)),
    ]
    for geometry, reference in checks:
        diff = differences(decode_image(data, geometry, BIG), reference)
        assert diff.mean() < DRAFT_MEAN and diff.max() < DRAFT_MAX, (
            f"{geometry.resize}/{geometry.interpolation}: mean {diff.mean():.3f} max {diff.max()}")


def test_a_rotated_photo_gives_the_same_pixels_as_the_upright_one():
    upright_data, _ = large_jpeg("china", 1)
    for orientation in (3, 6, 8):
        turned_data, _ = large_jpeg("china", orientation)
        diff = differences(decode_image(turned_data, crop(224, 224, "bicubic"), BIG),
                           decode_image(upright_data, crop(224, 224, "bicubic"), BIG))
        # Only JPEG's re-encoding of the turned pixels differs.
        assert diff.mean() < 1.0, f"orientation {orientation}: mean {diff.mean():.3f}"


def test_a_large_png_is_reduced_then_resampled_within_tolerance_of_the_exact_resample():
    # No draft for PNG: Pillow's reducing_gap box-reduces a 2560x1708 photo by whole factors
    # before the filter, instead of running the filter over every source pixel.
    pixels = full_decode(photo_bytes("china"))
    large = np.asarray(Image.fromarray(pixels).resize((2560, 1708), Image.Resampling.LANCZOS))
    data = encode(large, "PNG", compress_level=1)
    for interpolation in ("bicubic", "bilinear"):
        diff = differences(decode_image(data, crop(224, 224, interpolation), BIG),
                           ref.efficientnet_eval(large, 224, interpolation))
        assert diff.mean() < 0.5 and diff.max() < 16, f"mean {diff.mean():.3f} max {diff.max()}"


# --- the contract reaches the web tier -----------------------------------------------------

def contract(**overrides) -> ModelContract:
    fields = dict(name="geo", version="1", input_height=64, input_width=48, classes=10, resize="center_crop",
                  crop_fraction=0.8, interpolation="bicubic")
    return ModelContract(**{**fields, **overrides})


def test_geometry_of_a_contract_takes_its_geometry():
    assert Geometry.of(contract(pad_value=9)) == Geometry(64, 48, "center_crop", 0.8, "bicubic", 9)
    assert Geometry.of((32, 16)) == Geometry(32, 16, "squash")


@pytest.mark.parametrize("bad", [dict(resize="stretch"), dict(interpolation="cubic"), dict(crop_fraction=0.0),
                                 dict(height=0)])
def test_an_impossible_geometry_is_refused(bad):
    with pytest.raises(ValueError):
        Geometry(**{**dict(height=8, width=8), **bad})


def test_a_keras_file_without_a_config_is_squashed_as_before():
    contract = legacy_contract("user", (32, 48), 3, "unit", {"BATCH_SIZE": 4})
    assert Geometry.of(contract) == Geometry(32, 48, "squash", 0.875, "bilinear")


def test_the_web_tier_queues_the_pixels_the_heartbeats_contract_asks_for(make_client, model_server_web_config,
                                                                        redis_client):
    queue = make_queue(model_server_web_config)  # the heartbeat is the model server's
    declared = contract()
    queue.heartbeat(Heartbeat(name="geo-server", models=[ServedModel(declared, "ready")]), ttl=30)
    data = photo_bytes("china")
    response = make_client().post("/predict?async=1", data={"image": (io.BytesIO(data), "china.jpg")})
    assert response.status_code == 202, response.get_json()
    [(_, fields)] = redis_client.xrange(queue.for_model(declared.name, declared.version).stream)
    queued = Job.from_redis(fields).pixels
    assert np.array_equal(queued, decode_image(data, declared, BIG))
    squashed = decode_image(data, (64, 48), BIG)
    assert differences(queued, squashed).mean() > 5  # and it is not the squashed photo


def test_a_corrupt_exif_orientation_is_ignored():
    exif = Image.Exif()
    exif[0x0112] = 42  # no such orientation
    data = encode(Image.new("RGB", (60, 40), (200, 10, 10)), "JPEG", exif=exif)
    assert decode_image(data, crop(16, 16, "bilinear"), BIG).shape == (16, 16, 3)
    with pytest.raises(ImageError):
        decode_image(data[:-200], crop(16, 16, "bilinear"), BIG)


def test_frame_maps_photo_coordinates_into_the_decoded_image():
    assert Frame((400, 300), 0.25, (0.5, 0.0)).map((0, 0, 400, 300)) == (0.5, 0.0, 100.5, 75.0)
