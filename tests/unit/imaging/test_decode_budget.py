"""Decode memory is bounded: each upload's cost is known from its header, and a per-process budget
(imaging/budget.py) bounds what concurrent decodes hold. 64 concurrent worst-case uploads of each
kind through real Apache: tests/system/test_decode_budget.py.

The worst cases (tests/support/decode_bombs.py) are tiny files that decode to as many bytes as
MAX_IMAGE_PIXELS allows: a 16-bit RGBA PNG, a 32-bit float TIFF in one strip, a lossless RGBA
WebP of a few dozen bytes, a GIF whose first frame is far larger than its screen, and a
progressive EXIF-rotated JPEG (libjpeg holds all its coefficients whatever the draft scale).
"""
from __future__ import annotations

import io
import struct
import threading
import time

import numpy as np
import pytest
from PIL import Image

from keras_rest_api.errors import ImageError, ImageTooLarge
from keras_rest_api.imaging.budget import DecodeBudget, DecodeBusy, DecodeTooLarge
from keras_rest_api.imaging.decode import decode_cost, decode_image, open_image
from tests.support.body_stream import MeasuredBody
from tests.support.decode_bombs import KINDS, measure_decode
from tests.support.hostile_inputs import encode, noise

MIB = 2**20
PIXELS = 4_000_000  # MAX_IMAGE_PIXELS of the system test (tests/system/test_decode_budget.py)


# --- the budget itself ----------------------------------------------------------------------------

def test_a_reservation_within_the_budget_is_granted_and_given_back():
    budget = DecodeBudget(100, wait_seconds=0)
    with budget.reserve(60):
        assert budget.in_use == 60
        with budget.reserve(40):
            assert budget.in_use == 100
    assert budget.in_use == 0 and budget.peak == 100


def test_more_than_the_whole_budget_is_a_413_at_once():
    budget = DecodeBudget(100, wait_seconds=5)
    started = time.monotonic()
    with pytest.raises(DecodeTooLarge) as caught:
        budget.acquire(101)
    assert caught.value.status == 413 and time.monotonic() - started < 0.5
    assert "DECODE_MEMORY_BUDGET" in str(caught.value)


def test_no_room_within_the_wait_is_a_503_with_retry_after():
    budget = DecodeBudget(100, wait_seconds=0.3, retry_after=2)
    budget.acquire(80)
    started = time.monotonic()
    with pytest.raises(DecodeBusy) as caught:
        budget.acquire(30)
    waited = time.monotonic() - started
    assert 0.25 <= waited < 2, waited
    assert caught.value.status == 503 and caught.value.headers == {"Retry-After": "2"}
    assert budget.in_use == 80


def test_a_waiting_decode_goes_ahead_as_soon_as_another_gives_back():
    budget = DecodeBudget(100, wait_seconds=5)
    budget.acquire(80)
    granted = threading.Event()

    def wait_for_room() -> None:
        budget.acquire(50)
        granted.set()

    thread = threading.Thread(target=wait_for_room)
    thread.start()
    assert not granted.wait(0.3), "granted while the budget was full"
    budget.release(80)
    assert granted.wait(2), "not granted after the release"
    thread.join(2)
    assert budget.in_use == 50


def test_capacity_zero_means_unbounded():
    budget = DecodeBudget(0, wait_seconds=0)
    with budget.reserve(10**15):
        pass


# --- costs from headers, checked against measured memory ------------------------------------------

@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_cost_from_the_header_covers_the_measured_peak(kind, tmp_path):
    """decode_cost must never be below what the decode really holds (peak RSS growth of a fresh
    process), nor wildly above it (that would refuse images needlessly)."""
    measured = measure_decode(KINDS[kind](PIXELS), 224, tmp_path)
    assert measured["shape"] == [224, 224, 3]
    assert measured["peak"] <= measured["cost"], measured
    assert measured["cost"] <= 2.5 * measured["peak"] + 4 * MIB, measured


def test_16_bit_and_float_images_are_converted_without_full_size_float_copies(tmp_path):
    # The whole-image float64 conversion held about 25 bytes a pixel; tile by tile it is the
    # 2-byte frame and the 4-byte RGB image, plus small change.
    measured = measure_decode(KINDS["png16_grey"](PIXELS), 224, tmp_path)
    assert measured["mode"].startswith("I;16")
    assert measured["peak"] < 8 * PIXELS, f"{measured['peak'] / MIB:.1f} MiB for a {PIXELS}-pixel 16-bit PNG"


def test_a_progressive_jpeg_costs_its_full_size_coefficients_a_baseline_one_does_not():
    pixels = noise(800, 600)
    costs = {}
    for progressive in (False, True):
        data = encode(pixels, "JPEG", progressive=progressive, subsampling=0)
        image = open_image(data, PIXELS)
        full = image.size
        image.draft("RGB", (32, 32))
        assert image.size == (100, 75)  # drafted to 1/8
        costs[progressive] = decode_cost(image, (32, 32), full, len(data))
    assert costs[True] - costs[False] >= 800 * 600 * 3 * 2  # three components, two bytes a coefficient


def test_an_image_whose_cost_exceeds_the_budget_is_refused_from_its_header_alone():
    data = KINDS["webp_lossless_rgba"](PIXELS)
    assert len(data) < 1000
    budget = DecodeBudget(8 * MIB, wait_seconds=5)
    started = time.monotonic()
    with pytest.raises(DecodeTooLarge):
        decode_image(data, (224, 224), PIXELS, budget=budget)
    assert time.monotonic() - started < 0.5 and budget.peak == 0


def test_a_gif_frame_larger_than_its_screen_is_checked_by_the_frame():
    data = KINDS["gif_huge_frame"](PIXELS)
    assert struct.unpack("<HH", data[6:10]) == (1, 1)
    assert open_image(data, PIXELS).size == (2000, 2000)
    with pytest.raises(ImageTooLarge):
        open_image(data, PIXELS - 1)


def test_only_the_first_frame_of_a_gif_is_decoded():
    pixels = decode_image(KINDS["gif_huge_frame"](40_000), (8, 8), PIXELS)
    palette_index_1 = Image.new("P", (1, 1), 1).convert("RGB").getpixel((0, 0))
    assert (pixels == np.array(palette_index_1, dtype=np.uint8)).all()


def test_icons_are_refused_because_pillow_decodes_them_while_opening():
    # An icon whose directory says 16x16 but whose PNG frame is 3000x2000: Pillow decodes that
    # frame inside Image.open, before any size check could run, so icons are not accepted.
    inner = encode(Image.new("RGB", (3000, 2000), (1, 2, 3)), "PNG")
    icon = struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(inner), 22) + inner
    with pytest.raises(ImageError) as caught:
        open_image(icon, 1_000_000)
    assert caught.value.status == 400 and "not an image in a supported format" in str(caught.value)


def test_a_full_queue_is_a_503_before_the_upload_is_read_or_decoded(make_client, heartbeat_only):
    # A budget far too small for the bomb: decoding it first would answer 413, not 503.
    client = make_client(MAX_QUEUE_LENGTH=1, DECODE_MEMORY_BUDGET=4 * MIB)
    first = client.post("/predict?async=1", data={"image": (io.BytesIO(encode(noise(8, 8), "PNG")), "x.png")},
                        content_type="multipart/form-data")
    assert first.status_code == 202, first.get_data(as_text=True)
    bomb = KINDS["webp_lossless_rgba"](PIXELS)
    stream = MeasuredBody(bomb)
    response = client.post("/predict", input_stream=stream, content_type="image/webp", content_length=len(bomb))
    assert response.status_code == 503, response.get_data(as_text=True)
    assert "queue is full" in response.json["error"] and response.headers["Retry-After"]
    assert stream.bytes_read == 0, f"{stream.bytes_read} of {len(bomb)} bytes were read although the queue was full"


def test_through_the_app_a_budget_refusal_is_a_json_413_or_503_with_retry_after(make_client, heartbeat_only):
    bomb = KINDS["webp_lossless_rgba"](PIXELS)
    too_small = make_client(DECODE_MEMORY_BUDGET=MIB, MAX_IMAGE_PIXELS=PIXELS)
    response = too_small.post("/predict", data=bomb, content_type="image/webp")
    assert response.status_code == 413 and "DECODE_MEMORY_BUDGET" in response.json["error"]

    app_client = make_client(DECODE_MEMORY_BUDGET=200 * MIB, DECODE_WAIT_MS=200, MAX_IMAGE_PIXELS=PIXELS)
    budget = app_client.application.extensions["decode_budget"]
    budget.acquire(190 * MIB)  # another decode holds nearly all of it
    try:
        started = time.monotonic()
        response = app_client.post("/predict", data=bomb, content_type="image/webp")
    finally:
        budget.release(190 * MIB)
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.headers["Retry-After"] and response.json["success"] is False
    assert 0.15 <= time.monotonic() - started < 3
