"""Validating and decoding uploads into the model's uint8 RGB pixels (web tier, Pillow only).

Everything a client can send either becomes a (height, width, 3) uint8 array or raises
`ImageError` carrying the HTTP status and a message that says what to send instead.

The photo becomes the model's input exactly the way the model declares (its contract's
geometry: resize policy, crop fraction, interpolation, input size), never by a guess: a model
evaluated on centre crops gets centre crops, not a squashed photo.

Memory: the bytes a decode will hold are worked out from the header before any pixel is decoded
(`decode_cost`), so a `imaging.budget.DecodeBudget` can bound what all concurrent decodes of one
process hold. Conversion to 8-bit RGB goes tile by tile (no full-size float copy); the budget
counts the decoded frame, its decoder's buffers, the EXIF-rotated copy, the RGB copy and the
small working images.

Which formats decode at a reduced size: JPEG only (libjpeg scales by 1/2, 1/4 or 1/8 while
decoding; `draft_for`). PNG, GIF, BMP, PPM, TIFF and WebP always decode the whole frame at full
size (Pillow has no scaled decoder for them; `reduce` or `thumbnail` run after the full decode),
so their budget counts the full frame and their decoders' own buffers. Only frame 0 of an
animated or multi-page file is decoded, and its own header is what is checked.
"""
from __future__ import annotations

import functools
import io
import logging
import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Protocol, Union

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from keras_rest_api.errors import ImageError, ImageTooLarge
from keras_rest_api.imaging.budget import DecodeBudget
from keras_rest_api.queue.records import INTERPOLATIONS, RESIZE_POLICIES

log = logging.getLogger(__name__)

# Formats Pillow decodes safely and that photographs come in (JPEG covers MPO too). Restricting
# the list also keeps Pillow from probing exotic decoders (EPS runs Ghostscript) with hostile bytes.
# Not ICO: Pillow decodes an icon's largest frame inside Image.open, before anyone can check its
# size, and that frame (a PNG) may be far larger than the icon's directory says.
PHOTO_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF", "PPM")


@functools.cache
def accepted_formats() -> tuple[str, ...]:
    """The photo formats this Pillow decodes, with Pillow set up for untrusted files (once, at
    the first decode rather than at import: importing this module changes nothing)."""
    Image.init()  # `formats=` only knows plugins already loaded
    # A truncated file must be rejected, not silently padded with grey.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    # `open_image` checks the pixel count against the configured MAX_IMAGE_PIXELS itself; Pillow's
    # own fixed limit (about 89 M, as a warning) would otherwise cap any larger setting.
    Image.MAX_IMAGE_PIXELS = None
    return tuple(f for f in PHOTO_FORMATS if f in Image.OPEN)


def decode_image(data: bytes, geometry: GeometryLike, max_pixels: int,
                 budget: DecodeBudget | None = None) -> np.ndarray:
    """Decode `data` to the model's uint8 RGB input pixels, shape (height, width, 3).

    `geometry` is the model's contract (or a `Geometry`; a bare (height, width) squashes, as
    before contracts). EXIF orientation is applied, any mode becomes RGB (transparency over
    white), then `fit` resizes, crops or pads as the geometry says. The pixel count and the
    memory the decode will hold are checked from the header, before any pixel is decoded, so
    decompression bombs cost nothing. With a `budget`, the decode first reserves its cost
    there: it may wait briefly, and raises a 413 ImageError when it alone exceeds the budget,
    or a 503 one (with Retry-After) when other decodes hold it for longer than its wait.
    """
    geometry = Geometry.of(geometry)
    image = open_image(data, max_pixels)
    orientation, frame, cost = _plan(image, geometry, len(data))
    with budget.reserve(cost) if budget is not None else nullcontext():
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageError(
                f"The image is truncated or corrupt ({exc}). Send a complete, valid image file."
            ) from None
        if orientation is None:
            orientation = _orientation(image)
            frame = draft_for(image, geometry, orientation)
        image = _apply_orientation(image, orientation)
        image = to_rgb(image)
        return np.asarray(fit(image, geometry, frame), dtype=np.uint8)


# --- geometry: from the decoded photo to the model's input ----------------------------------------

# Pillow's filter for each interpolation a model contract may declare (the same names).
RESAMPLING = {name: Image.Resampling[name.upper()] for name in INTERPOLATIONS}
REDUCING_GAP = 3.0
# Draft decoding keeps at least this many decoded pixels per input pixel (per side), so the
# resampling filter, not libjpeg's DCT scaling, does the last step of shrinking. Measured on
# scikit-learn's china.jpg enlarged 6x against a full decode: 1/8 scale (one pixel per input
# pixel) is 1.74 mean |diff| off, 1/4 (two) 0.44, for about 10 % more decoding time.
DRAFT_MARGIN = 2
# EXIF orientations that transpose the image (its width becomes its height).
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)


class GeometrySource(Protocol):
    """What `Geometry.of` reads: `protocol.ModelContract` has these fields."""

    input_height: int
    input_width: int
    resize: str
    crop_fraction: float
    interpolation: str
    pad_value: int


GeometryLike = Union["Geometry", GeometrySource, "tuple[int, int]"]


@dataclass(frozen=True)
class Geometry:
    """How a decoded photo becomes the model's input: the geometric part of a model contract.

    resize: "center_crop" scales the photo so its shorter side is side / crop_fraction (for a
    non-square input: so it covers (height, width) / crop_fraction) and cuts out the centre;
    "squash" scales each side to the input, ignoring the aspect ratio; "letterbox" scales the
    whole photo to fit and pads the rest with `pad_value`.
    """

    height: int
    width: int
    resize: str = "squash"
    crop_fraction: float = 1.0
    interpolation: str = "bilinear"
    pad_value: int = 0

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_POLICIES:
            raise ValueError(f"resize {self.resize!r}: expected center_crop, squash or letterbox")
        if self.interpolation not in RESAMPLING:
            raise ValueError(f"interpolation {self.interpolation!r}: expected one of {', '.join(RESAMPLING)}")
        if not 0 < self.crop_fraction <= 1:
            raise ValueError(f"crop_fraction {self.crop_fraction!r}: expected a number in (0, 1]")
        if self.height < 1 or self.width < 1:
            raise ValueError(f"input size {self.height}x{self.width}: expected at least 1x1")

    @classmethod
    def of(cls, source: GeometryLike) -> "Geometry":
        """The geometry of a model contract; a bare (height, width) means squash (the old behaviour)."""
        if isinstance(source, Geometry):
            return source
        if isinstance(source, tuple):
            height, width = source
            return cls(int(height), int(width))
        return cls(int(source.input_height), int(source.input_width), source.resize,
                   float(source.crop_fraction), source.interpolation, int(source.pad_value))

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as Pillow counts."""
        return self.width, self.height


@dataclass(frozen=True)
class Placement:
    """Where a photo's pixels go: `box` of the photo (its own coordinates, fractional) is resampled
    to `size` (width, height) and placed at `offset` (x, y) of the model's input."""

    box: tuple[float, float, float, float]
    size: tuple[int, int]
    offset: tuple[int, int] = (0, 0)


def placement(geometry: Geometry, width: int, height: int) -> Placement:
    """Where the pixels of a `width` x `height` (upright, full-resolution) photo go in the input."""
    out_w, out_h = geometry.size
    if geometry.resize == "squash":
        return Placement((0.0, 0.0, float(width), float(height)), (out_w, out_h))
    if geometry.resize == "center_crop":
        return Placement(_crop_window(geometry, width, height), (out_w, out_h))
    # letterbox: the whole photo, scaled to fit, centred; the bands left over are padding.
    scale = min(out_w / width, out_h / height)
    fit_w = min(out_w, max(1, round(width * scale)))
    fit_h = min(out_h, max(1, round(height * scale)))
    return Placement((0.0, 0.0, float(width), float(height)), (fit_w, fit_h),
                     ((out_w - fit_w) // 2, (out_h - fit_h) // 2))


def _crop_window(geometry: Geometry, width: int, height: int) -> tuple[float, float, float, float]:
    """The centre window that, scaled to the input, is "shorter side to side / crop_fraction, then
    the centre". Whole pixels with the offsets rounded up, as TensorFlow's EfficientNet eval
    (`_decode_and_center_crop`) cuts it, so the default model sees the crop it was measured on."""
    out_w, out_h = geometry.size
    fraction = geometry.crop_fraction
    if out_h * width >= out_w * height:  # the photo is wider than the input: its height limits
        crop_h = fraction * height
        crop_w = crop_h * out_w / out_h
    else:
        crop_w = fraction * width
        crop_h = crop_w * out_h / out_w
    # A hair added before truncating, so 0.875 * 256 stays 224 whatever the float noise.
    crop_w_px = min(width, max(1, int(crop_w + 1e-6)))
    crop_h_px = min(height, max(1, int(crop_h + 1e-6)))
    left, top = (width - crop_w_px + 1) // 2, (height - crop_h_px + 1) // 2
    return float(left), float(top), float(left + crop_w_px), float(top + crop_h_px)


def needed_size(geometry: Geometry, width: int, height: int) -> tuple[int, int]:
    """The fewest pixels (width, height) a `width` x `height` photo must be decoded at so that the
    part the model sees keeps at least one decoded pixel per input pixel: the floor for JPEG
    draft decoding. For center_crop that is a shorter side of at least side / crop_fraction."""
    where = placement(geometry, width, height)
    left, top, right, bottom = where.box
    # A hair under the exact figure before rounding up, so float noise never asks for one more.
    need_w = math.ceil(width * where.size[0] / (right - left) - 1e-6)
    need_h = math.ceil(height * where.size[1] / (bottom - top) - 1e-6)
    return min(width, max(1, need_w)), min(height, max(1, need_h))


@dataclass(frozen=True)
class Frame:
    """How the decoded image relates to the full-resolution upright photo the geometry is
    computed on: photo coordinate x lies at offset[0] + x * scale in the decoded image.

    Draft decoding scales by 1/2, 1/4 or 1/8 and rounds the size up, so a partial last pixel
    may pad the right or bottom edge; EXIF orientation can move that padding to the left or top.
    """

    size: tuple[int, int]  # (width, height) of the full-resolution upright photo
    scale: float = 1.0
    offset: tuple[float, float] = (0.0, 0.0)

    def map(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        x0, y0, x1, y1 = box
        ox, oy = self.offset
        return ox + x0 * self.scale, oy + y0 * self.scale, ox + x1 * self.scale, oy + y1 * self.scale


def draft_for(image: Image.Image, geometry: Geometry, orientation: int = 1) -> Frame:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale, but never below what `geometry` needs
    (`needed_size`, times DRAFT_MARGIN).

    Pillow's draft picks the largest reduction that keeps each side at least the size asked for
    (verified in tests). The need is computed on the photo as it stands after EXIF `orientation`,
    then asked for in the file's own orientation (a quarter turn swaps the sides). Returns the
    `Frame` that maps photo coordinates into the decoded, oriented image.
    """
    width, height = image.size
    transposed = orientation in _TRANSPOSING_ORIENTATIONS
    upright = (height, width) if transposed else (width, height)
    if image.format != "JPEG":
        return Frame(upright)
    need_w, need_h = (min(full, need * DRAFT_MARGIN) for full, need in zip(upright, needed_size(geometry, *upright)))
    drafted = image.draft("RGB", (need_h, need_w) if transposed else (need_w, need_h))
    if not drafted:
        return Frame(upright)
    _, (_, _, content_w, content_h) = drafted  # the photo's extent in decoded pixels
    scale = content_w / width
    # The decoded size is rounded up: the excess lies right and bottom in the file's orientation.
    excess_x, excess_y = image.size[0] - content_w, image.size[1] - content_h
    offset = {
        2: (excess_x, 0.0), 3: (excess_x, excess_y), 4: (0.0, excess_y), 5: (0.0, 0.0),
        6: (excess_y, 0.0), 7: (excess_y, excess_x), 8: (0.0, excess_x),
    }.get(orientation, (0.0, 0.0))
    return Frame(upright, scale, offset)


def fit(image: Image.Image, geometry: Geometry, frame: Frame | None = None) -> Image.Image:
    """Resample `image` (RGB, upright) into the model's input as `geometry` says.

    Crop and resize are one `resize(box=...)`: no cropped copy, and a fractional box where
    draft decoding left the window between pixels. Unlike a crop followed by a resize, the
    filter may read the pixels just outside the window, which changes only the outermost row
    and column (measured in tests/unit/imaging/test_geometry.py).
    """
    frame = frame or Frame(image.size)
    where = placement(geometry, *frame.size)
    box = frame.map(where.box)
    resample = RESAMPLING[geometry.interpolation]
    if where.size == image.size and box == (0.0, 0.0, *map(float, image.size)):
        resized = image  # already the input size: nothing to resample (exact, and no copy)
    else:
        # reducing_gap 3: a large PNG is first box-reduced by a whole factor, then resampled;
        # 2-5x faster, within 0.3 mean / 3 max of the exact resample (tests/unit/imaging/test_geometry.py).
        resized = image.resize(where.size, resample, box=box, reducing_gap=REDUCING_GAP)
    if where.size == geometry.size:
        return resized
    canvas = Image.new("RGB", geometry.size, (geometry.pad_value,) * 3)
    canvas.paste(resized, where.offset)
    return canvas


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8) of an opened image; 1 when absent or unreadable."""
    try:
        value = int(image.getexif().get(0x0112, 1))
    except Exception as exc:  # a broken EXIF block should not cost the client its answer
        log.debug("ignoring unreadable EXIF orientation: %s", exc)
        return 1
    return value if 1 <= value <= 8 else 1


# The transposition that makes each EXIF orientation upright (as ImageOps.exif_transpose does).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def planned_cost(data: bytes, geometry: GeometryLike, max_pixels: int) -> int:
    """The bytes `decode_image(data, geometry, max_pixels)` will reserve (headers only)."""
    return _plan(open_image(data, max_pixels), Geometry.of(geometry), len(data))[2]


def _plan(image: Image.Image, geometry: Geometry, data_length: int) -> tuple[int | None, Frame | None, int]:
    """(orientation, frame, cost) of an opened image: sets its draft, decodes nothing.

    The orientation is read once: the draft's floor, the transposition and the crop's mapping
    must agree on it. A PNG may keep its EXIF after the pixels, and Pillow decodes the whole
    image to find it: such a PNG's orientation (None here) is read after the budgeted load; PNG
    has no draft to plan.
    """
    full_size = image.size
    orientation = _orientation(image) if _exif_in_header(image) else None
    frame = draft_for(image, geometry, orientation) if orientation is not None else None
    cost = decode_cost(image, (geometry.height, geometry.width), full_size, data_length,
                       transposed_copy=orientation != 1)
    return orientation, frame, cost


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Open `data` lazily (header only) and check its format and pixel count."""
    if not data:
        raise ImageError("The uploaded file is empty. Send an image file (JPEG, PNG, GIF, BMP, WebP, TIFF).")
    formats = accepted_formats()
    try:
        image = Image.open(io.BytesIO(data), formats=formats)
    except UnidentifiedImageError:
        raise ImageError(
            "The upload is not an image in a supported format. "
            f"Send one of: {', '.join(f.lower() for f in formats)}."
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


def _apply_orientation(image: Image.Image, orientation: int) -> Image.Image:
    # Transposed here rather than by ImageOps.exif_transpose, which copies even an upright
    # image, and so that the orientation applied is the one `draft_for` planned with.
    method = _UPRIGHT.get(orientation)
    return image if method is None else image.transpose(method)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: 16/32-bit greys rescaled, transparency composited on white.

    Converted one tile at a time into the RGB result, so no full-size intermediate (float
    copies of 16/32-bit data, RGBA and white layers for transparency) is ever made.
    """
    if image.mode == "RGB":
        return image
    width, height = image.size
    scale = _full_scale(image)
    alpha = _has_alpha(image)
    out = Image.new("RGB", image.size)
    for top in range(0, height, _TILE):
        for left in range(0, width, _TILE):
            tile = image.crop((left, top, min(width, left + _TILE), min(height, top + _TILE)))
            out.paste(_tile_to_rgb(tile, scale, alpha), (left, top))
    return out


def _tile_to_rgb(tile: Image.Image, scale: float | None, alpha: bool) -> Image.Image:
    if scale is not None:
        # 16/32-bit greys: scaled in float32, one tile at a time.
        values = np.array(tile, dtype=np.float32)  # a writable copy
        np.nan_to_num(values, copy=False, nan=0.0)
        if scale != 255.0:
            values *= np.float32(255.0 / scale)
        np.rint(values, out=values)
        np.clip(values, 0, 255, out=values)
        return Image.fromarray(values.astype(np.uint8), "L").convert("RGB")
    if alpha:
        rgba = (tile.convert("LA") if tile.mode == "La" else tile).convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return tile.convert("RGB")


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info)


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


def _exif_in_header(image: Image.Image) -> bool:
    """Whether reading the EXIF orientation needs no decoding (PNG may keep EXIF after its pixels)."""
    return image.format != "PNG" or "exif" in image.info


# --- memory: what a decode holds, from the header only --------------------------------------------

# Bytes per pixel of Pillow's own storage (libImaging/Storage.c): one byte for the 8-bit
# single-band modes, two for the 16-bit ones, and a 32-bit word per pixel for everything else
# (I, F, and every mode of two to four bands: RGB takes four bytes a pixel, not three).
_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2,
                "BGR;15": 2, "BGR;16": 2, "BGR;24": 3}
_WORD = 4
# `to_rgb` converts tiles of this many pixels a side.
_TILE = 512
# Bytes per tile pixel a conversion may hold besides the tile's own copy: float32 and uint8
# copies (16/32-bit modes), an L image, an RGBA image, a white layer, their composite, the RGB.
_TILE_WORK_BYTES = 4 + 1 + 1 + 4 + 4 + 4 + 4
# Allocator slack and small objects (headers, palettes, EXIF) of one decode.
_FIXED_BYTES = 1 << 20


def decode_cost(image: Image.Image, size: tuple[int, int], full_size: tuple[int, int] | None = None,
                data_length: int = 0, transposed_copy: bool = True) -> int:
    """Bytes that decoding `image` (opened, not loaded, after any draft) to `size` (h, w) will hold.

    The decoded frame (width x height x bytes per pixel of its mode, as Pillow stores it), the
    decoder's own buffers, the EXIF-rotated copy (`transposed_copy`), the RGB copy, one tile's
    conversion, `fit`'s box-reduced image and the small outputs. `full_size` is the size before
    the draft (JPEG's coefficient buffers are full size); `data_length` the upload's length
    (some decoders copy the whole file). Checked against measured peaks in tests/unit/imaging/test_decode_budget.py.
    """
    width, height = image.size
    full_size = full_size or image.size
    pixel_bytes = _PIXEL_BYTES.get(image.mode, _WORD)
    frame = width * height * pixel_bytes
    decoder = _decoder_bytes(image, full_size, data_length)
    rotated = frame if transposed_copy else 0
    rgb = 0 if image.mode == "RGB" else width * height * _WORD
    tile = min(_TILE, width) * min(_TILE, height) * (pixel_bytes + _TILE_WORK_BYTES)
    target_h, target_w = size
    # resize(reducing_gap=3) box-reduces by a whole factor to no less than 3x the target a side
    # (under 6x), then resamples; letterbox adds a canvas; then the array.
    reduced = min(width * height, 36 * target_w * target_h) * _WORD
    output = target_h * target_w * (_WORD * 3 + 3)
    return frame + decoder + rotated + rgb + tile + reduced + output + _FIXED_BYTES


def _decoder_bytes(image: Image.Image, full_size: tuple[int, int], data_length: int) -> int:
    """Memory the format's decoder holds besides the decoded frame."""
    width, height = image.size
    fmt = image.format
    if fmt in ("JPEG", "MPO"):
        return _jpeg_decoder_bytes(image, full_size)
    if fmt == "WEBP":
        # libwebp's animation decoder (which Pillow uses for every WebP) keeps two RGBA canvases,
        # the lossless decoder its own ARGB copy while decoding, and Pillow gets the frame as a
        # bytes object before copying it into the image: three more frames of four bytes a pixel,
        # held as long as the image is open.
        return 3 * width * height * _WORD
    if fmt == "TIFF":
        return _tiff_decoder_bytes(image, data_length)
    # PNG, GIF, BMP, PPM decode a row (or an LZW table) at a time into the frame.
    return width * 64


def _jpeg_decoder_bytes(image: Image.Image, full_size: tuple[int, int]) -> int:
    """libjpeg's buffers: a few MCU rows, or every DCT coefficient when the image has several scans.

    A progressive JPEG (or a sequential one whose first scan lacks a component) is held whole
    as DCT coefficients (two bytes each, 64 per 8x8 block of each component) at its full size,
    whatever the draft scale: about 3 bytes a pixel for 4:2:0 colour, 8 for 4:4:4 CMYK.
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
