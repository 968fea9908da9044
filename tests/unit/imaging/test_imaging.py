"""Upload validation and decoding: every input becomes (h, w, 3) uint8 RGB or a 400/413 ImageError.

All images are generated here with Pillow; nothing is mocked.
"""
from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from keras_rest_api.errors import ImageError, ImageTooLarge
from keras_rest_api.imaging.decode import decode_image, open_image, to_rgb
from tests.support.hostile_inputs import NOT_IMAGES, encode, noise, png_header_claiming

BIG = 50_000_000  # the default MAX_IMAGE_PIXELS
RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def left_right(width: int, height: int, left=RED, right=BLUE) -> Image.Image:
    image = Image.new("RGB", (width, height), left)
    image.paste(right, (width // 2, 0, width, height))
    return image


def assert_colour(pixel, expected, tolerance: int = 12) -> None:
    assert np.abs(np.asarray(pixel, dtype=int) - np.asarray(expected, dtype=int)).max() <= tolerance, (
        f"pixel {tuple(int(v) for v in pixel)} is not ~{expected}"
    )


def assert_pixels(array: np.ndarray, size: tuple[int, int]) -> None:
    assert array.shape == (size[0], size[1], 3)
    assert array.dtype == np.uint8


# --- the formats photographs come in ------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("size", [(32, 32), (224, 224), (48, 64)])
def test_jpeg_and_png_decode_to_uint8_rgb_at_the_requested_size(fmt, size):
    data = encode(noise(100, 80), fmt)
    pixels = decode_image(data, size, BIG)
    assert_pixels(pixels, size)


def test_png_at_the_requested_size_is_decoded_losslessly():
    original = noise(40, 30)
    pixels = decode_image(encode(original, "PNG"), (30, 40), BIG)
    assert np.array_equal(pixels, np.asarray(original))


def test_colours_survive_decoding_and_resizing():
    pixels = decode_image(encode(left_right(200, 100), "PNG"), (32, 32), BIG)
    assert_colour(pixels[16, 2], RED, 0)
    assert_colour(pixels[16, 29], BLUE, 0)


# --- EXIF orientation ---------------------------------------------------------------------------

def jpeg_with_orientation(orientation: int) -> bytes:
    """A 64 wide x 32 high JPEG, red on the left and blue on the right, tagged with `orientation`."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(left_right(64, 32), "JPEG", exif=exif, quality=95)


def test_exif_orientation_6_rotates_clockwise_so_left_becomes_top():
    pixels = decode_image(jpeg_with_orientation(6), (64, 32), BIG)  # now 32 wide, 64 high
    assert_pixels(pixels, (64, 32))
    assert_colour(pixels[8, 16], RED)
    assert_colour(pixels[56, 16], BLUE)


def test_exif_orientation_8_rotates_anticlockwise_so_left_becomes_bottom():
    pixels = decode_image(jpeg_with_orientation(8), (64, 32), BIG)
    assert_colour(pixels[8, 16], BLUE)
    assert_colour(pixels[56, 16], RED)


def test_without_exif_orientation_the_layout_is_unchanged():
    pixels = decode_image(jpeg_with_orientation(1), (32, 64), BIG)
    assert_colour(pixels[16, 8], RED)
    assert_colour(pixels[16, 56], BLUE)


# --- every mode becomes RGB -----------------------------------------------------------------------

def test_grayscale_l_becomes_grey_rgb():
    image = Image.new("L", (10, 10), 77)
    pixels = decode_image(encode(image, "PNG"), (10, 10), BIG)
    assert_pixels(pixels, (10, 10))
    assert (pixels == 77).all()


def test_one_bit_image_becomes_black_and_white():
    image = Image.new("1", (16, 16), 0)
    image.paste(1, (8, 0, 16, 16))
    pixels = decode_image(encode(image, "PNG"), (16, 16), BIG)
    assert_colour(pixels[8, 2], (0, 0, 0), 0)
    assert_colour(pixels[8, 13], WHITE, 0)


def test_palette_image_without_transparency_keeps_its_colours():
    image = left_right(20, 10, GREEN, BLUE).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    assert image.mode == "P"
    pixels = decode_image(encode(image, "PNG"), (10, 20), BIG)
    assert_colour(pixels[5, 2], GREEN, 0)
    assert_colour(pixels[5, 17], BLUE, 0)


def test_palette_image_with_a_transparent_index_composites_onto_white():
    image = Image.new("P", (20, 10), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))  # index 0 black, index 1 red
    image.paste(1, (10, 0, 20, 10))
    data = encode(image, "PNG", transparency=0)
    assert Image.open(io.BytesIO(data)).info.get("transparency") is not None
    pixels = decode_image(data, (10, 20), BIG)
    assert_colour(pixels[5, 2], WHITE, 0)  # transparent black shows the white background
    assert_colour(pixels[5, 17], RED, 0)


def test_rgba_transparent_pixels_become_white_not_black():
    image = Image.new("RGBA", (20, 10), (0, 0, 0, 0))  # fully transparent black
    image.paste((0, 0, 255, 255), (10, 0, 20, 10))  # opaque blue
    pixels = decode_image(encode(image, "PNG"), (10, 20), BIG)
    assert_colour(pixels[5, 2], WHITE, 1)
    assert_colour(pixels[5, 17], BLUE, 0)


def test_rgba_half_transparent_black_becomes_mid_grey():
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 128))
    pixels = decode_image(encode(image, "PNG"), (4, 4), BIG)
    assert_colour(pixels[0, 0], (127, 127, 127), 2)


def test_la_image_composites_onto_white():
    image = Image.new("LA", (20, 10), (0, 0))
    image.paste((50, 255), (10, 0, 20, 10))
    pixels = decode_image(encode(image, "PNG"), (10, 20), BIG)
    assert_colour(pixels[5, 2], WHITE, 1)
    assert_colour(pixels[5, 17], (50, 50, 50), 0)


def test_cmyk_jpeg_becomes_rgb():
    image = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # cyan-free, full magenta + yellow: red
    data = encode(image, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    pixels = decode_image(data, (16, 16), BIG)
    assert_pixels(pixels, (16, 16))
    assert_colour(pixels[8, 8], RED, 16)


def test_16_bit_grayscale_png_is_rescaled_to_8_bits():
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    pixels = decode_image(data, (1, 3), BIG)
    assert_pixels(pixels, (1, 3))
    assert pixels[0, 0].tolist() == [0, 0, 0]
    assert abs(int(pixels[0, 1, 0]) - 128) <= 1
    assert pixels[0, 2].tolist() == [255, 255, 255]
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()


def test_a_dark_16_bit_png_stays_dark():
    values = np.array([[0, 128, 255]], dtype=np.uint16)  # at most 0.4% of full scale: nearly black
    pixels = decode_image(encode(Image.fromarray(values), "PNG"), (1, 3), BIG)
    assert int(pixels.max()) <= 1


def test_32_bit_float_tiff_becomes_rgb():
    values = np.array([[0.0, 100.4, 255.0], [10.0, 20.0, 30.0]], dtype=np.float32)
    data = encode(Image.fromarray(values, "F"), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "F"
    pixels = decode_image(data, (2, 3), BIG)
    assert_pixels(pixels, (2, 3))
    assert pixels[..., 0].tolist() == [[0, 100, 255], [10, 20, 30]]


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (16, 16), colour) for colour in (RED, BLUE, GREEN)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    pixels = decode_image(data, (16, 16), BIG)
    assert_colour(pixels[8, 8], RED, 0)


def test_one_pixel_image_fills_the_requested_size():
    data = encode(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG")
    pixels = decode_image(data, (32, 32), BIG)
    assert_pixels(pixels, (32, 32))
    assert (pixels == np.array([10, 200, 30], dtype=np.uint8)).all()


@pytest.mark.parametrize("width,height", [(1, 3000), (3000, 1)])
def test_a_very_thin_image_is_stretched_to_the_requested_size(width, height):
    data = encode(Image.new("RGB", (width, height), (0, 128, 255)), "PNG")
    pixels = decode_image(data, (32, 32), BIG)
    assert_pixels(pixels, (32, 32))
    assert_colour(pixels[16, 16], (0, 128, 255), 1)


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "I;16", "I", "F", "YCbCr", "HSV"])
def test_to_rgb_turns_every_mode_into_rgb(mode):
    image = Image.new(mode, (3, 2))
    converted = to_rgb(image)
    assert converted.mode == "RGB"
    assert converted.size == (3, 2)


def test_to_rgb_returns_an_rgb_image_unchanged():
    image = Image.new("RGB", (3, 2), RED)
    assert to_rgb(image) is image


def test_open_image_reads_only_the_header():
    image = open_image(encode(noise(64, 48), "PNG"), BIG)
    assert image.size == (64, 48)
    assert image.format == "PNG"


# --- what is not an image ------------------------------------------------------------------------

def test_empty_upload_is_a_400_that_says_it_is_empty():
    with pytest.raises(ImageError) as caught:
        decode_image(b"", (32, 32), BIG)
    assert caught.value.status == 400
    assert "empty" in str(caught.value).lower()


@pytest.mark.parametrize("data", NOT_IMAGES.values(), ids=NOT_IMAGES.keys())
def test_non_images_are_a_400_that_says_not_an_image(data):
    with pytest.raises(ImageError) as caught:
        decode_image(data, (32, 32), BIG)
    assert caught.value.status == 400
    assert not isinstance(caught.value, ImageTooLarge)
    assert "not an image" in str(caught.value)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_truncated_image_is_a_400_not_grey_padding(fmt):
    data = encode(noise(128, 128), fmt)
    with pytest.raises(ImageError) as caught:
        decode_image(data[: len(data) // 2], (32, 32), BIG)
    assert caught.value.status == 400


# --- decompression bombs --------------------------------------------------------------------------

@pytest.mark.parametrize("side", [30_000, 10_000, 8_000])
def test_a_png_bomb_is_a_413_from_its_header_without_allocating_pixels(side):
    data = png_header_claiming(side, side)
    assert len(data) < 200
    started = time.perf_counter()
    with pytest.raises(ImageTooLarge) as caught:
        decode_image(data, (224, 224), BIG)
    assert time.perf_counter() - started < 0.5
    assert caught.value.status == 413


def test_the_bomb_header_is_itself_a_valid_png():
    image = open_image(png_header_claiming(20, 10), BIG)
    assert image.format == "PNG" and image.size == (20, 10)


def test_max_pixels_above_pillows_own_limit_is_honoured():
    image = open_image(png_header_claiming(10_000, 10_000), 200_000_000)
    assert image.size == (10_000, 10_000)


def test_an_image_just_over_max_pixels_is_a_413():
    data = encode(Image.new("RGB", (10, 10), RED), "PNG")
    with pytest.raises(ImageTooLarge) as caught:
        decode_image(data, (8, 8), max_pixels=99)
    assert caught.value.status == 413
    assert "10x10" in str(caught.value)


def test_an_image_exactly_at_max_pixels_is_accepted():
    data = encode(Image.new("RGB", (10, 10), RED), "PNG")
    pixels = decode_image(data, (8, 8), max_pixels=100)
    assert_pixels(pixels, (8, 8))


# --- JPEG draft decoding --------------------------------------------------------------------------

def test_a_large_jpeg_decoded_in_draft_mode_matches_a_full_decode():
    # Smooth content (a photo-like gradient with a few shapes) at 4000x3000.
    y, x = np.mgrid[0:3000, 0:4000]
    pixels = np.stack([x * 255 // 3999, y * 255 // 2999, (x + y) * 255 // 6998], axis=-1).astype(np.uint8)
    pixels[500:1500, 800:2000] = (250, 30, 30)
    pixels[1800:2600, 2500:3600] = (20, 20, 220)
    data = encode(Image.fromarray(pixels, "RGB"), "JPEG", quality=90)

    drafted = decode_image(data, (224, 224), BIG)
    assert_pixels(drafted, (224, 224))

    full = Image.open(io.BytesIO(data)).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
    difference = np.abs(drafted.astype(int) - np.asarray(full, dtype=int)).mean()
    assert difference < 8, f"draft decode differs from a full decode by {difference:.2f} on average"
