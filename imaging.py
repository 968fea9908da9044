"""Validating and decoding uploads into the model's uint8 RGB pixels (web tier, Pillow only).

Everything a client can send either becomes a (height, width, 3) uint8 array or raises
`ImageError` carrying the HTTP status and a message that says what to send instead.
"""
from __future__ import annotations

import io
import logging

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

# Formats Pillow decodes safely and that photographs come in (JPEG covers MPO too). Restricting
# the list also keeps Pillow from probing exotic decoders (EPS runs Ghostscript) with hostile bytes.
Image.init()  # `formats=` only knows plugins already loaded
ACCEPTED_FORMATS = tuple(f for f in ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF", "ICO", "PPM") if f in Image.OPEN)

# A truncated file must be rejected, not silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# `open_image` checks the pixel count against the configured MAX_IMAGE_PIXELS itself; Pillow's
# own fixed limit (about 89 M, as a warning) would otherwise cap any larger setting.
Image.MAX_IMAGE_PIXELS = None


class ImageError(ValueError):
    """An upload that cannot be classified; `status` is the HTTP status to answer with."""

    status = 400


class ImageTooLarge(ImageError):
    status = 413


def decode_image(data: bytes, size: tuple[int, int], max_pixels: int) -> np.ndarray:
    """Decode `data` to uint8 RGB pixels of shape (size[0], size[1], 3).

    EXIF orientation is applied, any mode becomes RGB (transparency over white), and the
    image is resized to `size` (height, width). The pixel count is checked from the header,
    before any pixel is decoded, so decompression bombs cost nothing.
    """
    image = open_image(data, max_pixels)
    height, width = size
    # JPEG can decode straight at 1/2, 1/4 or 1/8 scale; ask for no less than the target on
    # either side (rotation by EXIF may swap them).
    side = max(height, width)
    image.draft("RGB", (side, side))
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(
            f"The image is truncated or corrupt ({exc}). Send a complete, valid image file."
        ) from None
    image = _apply_orientation(image)
    image = to_rgb(image)
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(image, dtype=np.uint8)


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Open `data` lazily (header only) and check its format and pixel count."""
    if not data:
        raise ImageError("The uploaded file is empty. Send an image file (JPEG, PNG, GIF, BMP, WebP, TIFF).")
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        raise ImageError(
            "The upload is not an image in a supported format. "
            f"Send one of: {', '.join(f.lower() for f in ACCEPTED_FORMATS)}."
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"The image header is corrupt ({exc}). Send a valid image file.") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(f"The image is {width}x{height} pixels; it must be at least 1x1.")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"The image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}. "
            "Send a smaller image."
        )
    return image


def _apply_orientation(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception as exc:  # a broken EXIF block should not cost the client its answer
        log.debug("ignoring unreadable EXIF orientation: %s", exc)
        return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: 16/32-bit greys rescaled, transparency composited on white."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16"):
        # 16-bit data spans 0..65535 whatever its values: a dark image must stay dark.
        return Image.fromarray(_to_uint8(np.asarray(image), 65535.0), "L").convert("RGB")
    if image.mode in ("I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(image)), "L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    ):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _to_uint8(values: np.ndarray, full_scale: float | None = None) -> np.ndarray:
    values = values.astype(np.float64)
    if full_scale is None:
        # 32-bit integer or float data has no fixed range: values above 255 mean 16-bit data.
        top = float(values.max()) if values.size else 0.0
        full_scale = 65535.0 if top > 255.0 else 255.0
    if full_scale != 255.0:
        values = values * (255.0 / full_scale)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)
