"""Validating and decoding uploads into the model's uint8 RGB pixels (web tier, Pillow only).

Everything a client can send either becomes a (height, width, 3) uint8 array or raises
`ImageError` carrying the HTTP status and a message that says what to send instead.

Memory: the bytes a decode will hold are worked out from the header before any pixel is decoded
(`decode_cost`), so a `decode_budget.DecodeBudget` can bound what all concurrent decodes of one
process hold. Only the decoded frame itself is ever held at full size: it is converted to 8-bit
RGB and shrunk tile by tile, EXIF rotation is applied to the small result, and no full-size
float copy is ever made.

Which formats decode at a reduced size: JPEG only (libjpeg scales by 1/2, 1/4 or 1/8 while
decoding; `draft`). PNG, GIF, BMP, PPM, TIFF and WebP always decode the whole frame at full
size (Pillow has no scaled decoder for them; `reduce` or `thumbnail` run after the full decode),
so their budget counts the full frame and their decoders' own buffers.
"""
from __future__ import annotations

import io
import logging
import math
from contextlib import nullcontext
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

if TYPE_CHECKING:
    from decode_budget import DecodeBudget

log = logging.getLogger(__name__)

# Formats Pillow decodes safely and that photographs come in (JPEG covers MPO too). Restricting
# the list also keeps Pillow from probing exotic decoders (EPS runs Ghostscript) with hostile bytes.
# Not ICO: Pillow decodes an icon's largest frame inside Image.open, before anyone can check its
# size, and that frame (a PNG) may be far larger than the icon's directory says.
Image.init()  # `formats=` only knows plugins already loaded
ACCEPTED_FORMATS = tuple(f for f in ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF", "PPM") if f in Image.OPEN)

# A truncated file must be rejected, not silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# `open_image` checks the pixel count against the configured MAX_IMAGE_PIXELS itself; Pillow's
# own fixed limit (about 89 M, as a warning) would otherwise cap any larger setting.
Image.MAX_IMAGE_PIXELS = None

# Bytes per pixel of Pillow's own storage (libImaging/Storage.c): one byte for the 8-bit
# single-band modes, two for the 16-bit ones, and a 32-bit word per pixel for everything else
# (I, F, and every mode of two to four bands: RGB takes four bytes a pixel, not three).
_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2,
                "BGR;15": 2, "BGR;16": 2, "BGR;24": 3}
_WORD = 4
# The frame is converted to 8 bits and shrunk in tiles of about this many pixels a side, so a
# conversion never copies more than one tile.
_TILE = 512
# Bytes per tile pixel the conversion may hold besides the tile's own copy: a float32 copy and
# a uint8 copy (16/32-bit modes), an L image, an RGB or RGBA image, a premultiplied RGBa image.
_TILE_WORK_BYTES = 4 + 1 + 1 + 4 + 4
# Like Pillow's resize(reducing_gap=3.0): box-reduce by whole factors to no less than 3x the
# target on each side, then resample bilinearly.
_REDUCING_GAP = 3.0
# Allocator slack and small objects (headers, palettes, EXIF) of one decode.
_FIXED_BYTES = 1 << 20

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_ORIENTATION = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageError(ValueError):
    """An upload that cannot be classified; `status` is the HTTP status to answer with."""

    status = 400

    @property
    def headers(self) -> dict[str, str]:
        """Extra response headers (Retry-After for a 503)."""
        return {}


class ImageTooLarge(ImageError):
    status = 413


def decode_image(data: bytes, size: tuple[int, int], max_pixels: int,
                 budget: DecodeBudget | None = None) -> np.ndarray:
    """Decode `data` to uint8 RGB pixels of shape (size[0], size[1], 3).

    EXIF orientation is applied, any mode becomes RGB (transparency over white), and the
    image is resized to `size` (height, width). The pixel count and the memory the decode will
    hold are checked from the header, before any pixel is decoded, so decompression bombs cost
    nothing. With a `budget`, the decode first reserves its cost there: it may wait briefly,
    and raises a 413 ImageError when it alone exceeds the budget, or a 503 one (with
    Retry-After) when other decodes hold the budget for longer than the budget's wait.
    Only frame 0 of an animated or multi-page file is decoded.
    """
    image = open_image(data, max_pixels)
    height, width = size
    full_size = image.size
    # JPEG can decode straight at 1/2, 1/4 or 1/8 scale; ask for no less than the target on
    # either side (rotation by EXIF may swap them). Other formats ignore this.
    side = max(height, width)
    image.draft("RGB", (side, side))
    cost = decode_cost(image, size, full_size, len(data))
    with budget.reserve(cost) if budget is not None else nullcontext():
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageError(
                f"The image is truncated or corrupt ({exc}). Send a complete, valid image file."
            ) from None
        orientation = _orientation(image)
        # Shrink the stored frame to the target as it will look once rotated, then rotate the
        # small result: rotating first would copy the whole frame.
        stored_target = (height, width) if orientation < 5 else (width, height)
        small = _shrink(image, stored_target)
        if small is not image:
            image.close()  # frees the full-size frame before the small work
        pixels = _composite_on_white(small)
        if orientation in _TRANSPOSE:
            pixels = np.asarray(Image.fromarray(pixels, "RGB").transpose(_TRANSPOSE[orientation]))
        return np.ascontiguousarray(pixels, dtype=np.uint8)


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Open `data` lazily (header only) and check its format and pixel count."""
    if not data:
        raise ImageError("The uploaded file is empty. Send an image file (JPEG, PNG, GIF, BMP, WebP, TIFF).")
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        width, height = image.size
    except UnidentifiedImageError:
        raise ImageError(
            "The upload is not an image in a supported format. "
            f"Send one of: {', '.join(f.lower() for f in ACCEPTED_FORMATS)}."
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"The image header is corrupt ({exc}). Send a valid image file.") from None
    if width < 1 or height < 1:
        raise ImageError(f"The image is {width}x{height} pixels; it must be at least 1x1.")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"The image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}. "
            "Send a smaller image."
        )
    return image


def decode_cost(image: Image.Image, size: tuple[int, int], full_size: tuple[int, int] | None = None,
                data_length: int = 0) -> int:
    """Bytes that decoding `image` (opened, not loaded, after any `draft`) to `size` will hold.

    The decoded frame (width x height x bytes per pixel of its mode, as Pillow stores it), the
    decoder's own buffers, one tile's conversion, the box-reduced image and the small outputs.
    `full_size` is the size before `draft` (JPEG's coefficient buffers are full size);
    `data_length` the upload's length (some decoders copy the whole file).
    """
    (width, height), mode = image.size, image.mode
    full_size = full_size or image.size
    pixel_bytes = _pixel_bytes(mode)
    frame = width * height * pixel_bytes
    decoder = _decoder_bytes(image, (width, height), full_size, data_length)
    work = 0
    target_h, target_w = size
    for target in ((target_h, target_w), (target_w, target_h)):  # EXIF may swap the target's sides
        fx, fy = _factors((width, height), target)
        tile_w, tile_h = _tile_size(fx, fy)
        tile = min(tile_w, width) * min(tile_h, height) * (pixel_bytes + _TILE_WORK_BYTES)
        # The reduced image and its resized copy (the tile's reduced copy is within the tile's).
        reduced = math.ceil(width / fx) * math.ceil(height / fy) * _WORD * 2
        work = max(work, tile + reduced)
    # The resized image, its array, the composite, the rotated copy and the returned array.
    output = target_h * target_w * (_WORD * 2 + 2 * 3 + 3 + 3)
    return frame + decoder + work + output + _FIXED_BYTES


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: 16/32-bit greys rescaled, transparency composited on white."""
    if image.mode == "RGB":
        return image
    return Image.fromarray(_composite_on_white(_reduce_8bit(image, 1, 1)), "RGB")


# --- the pipeline ---------------------------------------------------------------------------------

def _shrink(image: Image.Image, target: tuple[int, int]) -> Image.Image:
    """`image` as RGB (or premultiplied RGBa when it has transparency), resized to `target` (h, w)."""
    height, width = target
    fx, fy = _factors(image.size, target)
    small = _reduce_8bit(image, fx, fy)
    if small.size != (width, height):
        small = small.resize((width, height), Image.Resampling.BILINEAR)
    return small


def _reduce_8bit(image: Image.Image, fx: int, fy: int) -> Image.Image:
    """`image` in 8-bit RGB or RGBa, box-reduced by (fx, fy), converting one tile at a time."""
    mode = "RGBa" if _has_alpha(image) else "RGB"
    if image.mode == mode:  # nothing to convert: reduce (or keep) the frame itself
        return image.reduce((fx, fy)) if fx > 1 or fy > 1 else image
    width, height = image.size
    scale = _full_scale(image)
    tile_w, tile_h = _tile_size(fx, fy)
    reduced = Image.new(mode, (math.ceil(width / fx), math.ceil(height / fy)))
    # Tiles are whole multiples of the factors, so reducing tile by tile gives exactly what
    # reducing the whole converted frame would.
    for top in range(0, height, tile_h):
        for left in range(0, width, tile_w):
            tile = image.crop((left, top, min(width, left + tile_w), min(height, top + tile_h)))
            tile = _tile_to_8bit(tile, mode, scale)
            if fx > 1 or fy > 1:
                tile = tile.reduce((fx, fy))
            reduced.paste(tile, (left // fx, top // fy))
    return reduced


def _tile_to_8bit(tile: Image.Image, mode: str, scale: float | None) -> Image.Image:
    if scale is not None:
        # 16/32-bit greys: scaled in float32 one tile at a time (never a full-size float copy).
        values = np.array(tile, dtype=np.float32)  # a writable copy
        np.nan_to_num(values, copy=False, nan=0.0)
        if scale != 255.0:
            values *= np.float32(255.0 / scale)
        np.rint(values, out=values)
        np.clip(values, 0, 255, out=values)
        return Image.fromarray(values.astype(np.uint8), "L").convert(mode)
    if mode == "RGBa":
        if tile.mode == "La":
            tile = tile.convert("LA")
        if tile.mode != "RGBA":
            tile = tile.convert("RGBA")
        return tile.convert("RGBa")
    return tile.convert("RGB")


def _composite_on_white(image: Image.Image) -> np.ndarray:
    """RGB pixels of an RGB image, or of a premultiplied RGBa one laid over white."""
    pixels = np.asarray(image)
    if image.mode == "RGB":
        return pixels
    # Over white, a premultiplied colour c' with alpha a shows c' + (255 - a).
    colour = pixels[..., :3].astype(np.uint16) + (255 - pixels[..., 3:4].astype(np.uint16))
    return np.minimum(colour, 255).astype(np.uint8)


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info)


def _full_scale(image: Image.Image) -> float | None:
    """The value that becomes 255 for 16/32-bit modes; None for 8-bit modes."""
    if image.mode.startswith("I;16"):
        # 16-bit data spans 0..65535 whatever its values: a dark image must stay dark.
        return 65535.0
    if image.mode in ("I", "F"):
        # 32-bit integer or float data has no fixed range: values above 255 mean 16-bit data.
        top = image.getextrema()[1]
        return 65535.0 if top is not None and top > 255 else 255.0
    return None


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(_ORIENTATION, 1)
        return int(value) if int(value) in _TRANSPOSE else 1
    except Exception as exc:  # a broken EXIF block should not cost the client its answer
        log.debug("ignoring unreadable EXIF orientation: %s", exc)
        return 1


def _factors(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    (width, height), (target_h, target_w) = size, target
    return (max(1, int(width / target_w / _REDUCING_GAP)), max(1, int(height / target_h / _REDUCING_GAP)))


def _tile_size(fx: int, fy: int) -> tuple[int, int]:
    return max(fx, _TILE // fx * fx), max(fy, _TILE // fy * fy)


# --- header-only geometry and decoder buffers ----------------------------------------------------

def _pixel_bytes(mode: str) -> int:
    return _PIXEL_BYTES.get(mode, _WORD)




def _decoder_bytes(image: Image.Image, size: tuple[int, int], full_size: tuple[int, int], data_length: int) -> int:
    """Memory the format's decoder holds besides the decoded frame (measured: tests/test_decode_budget.py)."""
    width, height = size
    fmt = image.format
    if fmt in ("JPEG", "MPO"):
        return _jpeg_decoder_bytes(image, full_size)
    if fmt == "WEBP":
        # libwebp's animation decoder (which Pillow uses for every WebP) keeps two RGBA canvases,
        # the lossless decoder its own ARGB copy while decoding, and Pillow gets the frame as a
        # bytes object before copying it into the image: three more frames of four bytes a pixel.
        return 3 * width * height * _WORD
    if fmt == "TIFF":
        return _tiff_decoder_bytes(image, data_length)
    # PNG, GIF, BMP, PPM decode a row (or an LZW table) at a time into the frame.
    return width * 64


def _jpeg_decoder_bytes(image: Image.Image, full_size: tuple[int, int]) -> int:
    """libjpeg's buffers: a few MCU rows, or every DCT coefficient when the image has several scans.

    A progressive JPEG (or a sequential one whose first scan lacks a component) must be held
    whole as DCT coefficients (two bytes each, 64 per 8x8 block of each component) at its full
    size, whatever the draft scale: about 3 bytes a pixel for 4:2:0 colour, 8 for 4:4:4 CMYK.
    """
    width, height = full_size
    layers = getattr(image, "layer", None) or [("", 1, 1, 0)] * len(image.getbands())
    rows = width * 16 * 2 * len(layers) * 4  # MCU-row, upsampling and colour-conversion buffers
    if not (image.info.get("progressive") or _first_scan_components(image) < len(layers)):
        return rows
    h_max = max(layer[1] for layer in layers) or 1
    v_max = max(layer[2] for layer in layers) or 1
    blocks = 0
    for _id, h, v, _table in layers:
        h, v = max(1, h), max(1, v)
        # Each component's blocks, padded to whole MCUs as libjpeg allocates them.
        blocks_w = math.ceil(math.ceil(width * h / h_max) / 8 / h) * h
        blocks_h = math.ceil(math.ceil(height * v / v_max) / 8 / v) * v
        blocks += blocks_w * blocks_h
    return blocks * 64 * 2 + rows


def _first_scan_components(image: Image.Image) -> int:
    """Components in the first scan (SOS) of a JPEG, 0 if it cannot be found (treated as several scans)."""
    fp = image.fp
    if fp is None:
        return 0
    data = fp.getvalue() if isinstance(fp, io.BytesIO) else b""
    index = 2
    while index + 4 < len(data):
        if data[index] != 0xFF:
            return 0
        marker = data[index + 1]
        if marker == 0xFF:  # fill byte
            index += 1
        elif marker == 0xDA:
            return data[index + 4]
        elif 0xD0 <= marker <= 0xD7 or marker == 0x01:
            index += 2
        else:
            index += 2 + int.from_bytes(data[index + 2:index + 4], "big")
    return 0


def _tiff_decoder_bytes(image: Image.Image, data_length: int) -> int:
    """libtiff decodes a strip or tile at a time into a buffer; Pillow hands it the whole file."""
    tags = getattr(image, "tag_v2", {})
    width, height = image.size
    samples = int(tags.get(277, 1) or 1)
    bits = tags.get(258, (8,))
    bits_per_pixel = samples * max(bits if isinstance(bits, tuple) else (bits,))
    if 322 in tags and 323 in tags:
        chunk_w, chunk_h = int(tags[322]), int(tags[323])
    else:
        chunk_w, chunk_h = width, min(int(tags.get(278, height) or height), height)
    chunk = math.ceil(chunk_w * bits_per_pixel / 8) * chunk_h
    if tags.get(259) in (6, 7) or tags.get(262) == 6:
        # JPEG-compressed or YCbCr data goes through TIFFReadRGBA*: four bytes a pixel.
        chunk = max(chunk, chunk_w * chunk_h * _WORD)
    # The decoded strip or tile, the file (Pillow reads it whole for libtiff) and libtiff's copy
    # of the compressed strip.
    return chunk + 2 * data_length
