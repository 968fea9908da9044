"""Validating and decoding uploads into the model's uint8 RGB pixels (web tier, Pillow only).

Everything a client can send either becomes a (height, width, 3) uint8 array or raises
`ImageError` carrying the HTTP status and a message that says what to send instead.

The photo becomes the model's input exactly the way the model declares (its contract's
geometry: resize policy, crop fraction, interpolation, input size), never by a guess: a model
evaluated on centre crops gets centre crops, not a squashed photo.
"""
from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from typing import Protocol, Union

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

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


def decode_image(data: bytes, geometry: GeometryLike, max_pixels: int) -> np.ndarray:
    """Decode `data` to the model's uint8 RGB input pixels, shape (height, width, 3).

    `geometry` is the model's contract (or a `Geometry`; a bare (height, width) squashes, as
    before contracts). EXIF orientation is applied, any mode becomes RGB (transparency over
    white), then `fit` resizes, crops or pads as the geometry says. The pixel count is checked
    from the header, before any pixel is decoded, so decompression bombs cost nothing.
    """
    geometry = Geometry.of(geometry)
    image = open_image(data, max_pixels)
    # Read once: the draft's floor, the transposition and the crop's mapping must agree on it.
    orientation = _orientation(image)
    frame = draft_for(image, geometry, orientation)
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(
            f"The image is truncated or corrupt ({exc}). Send a complete, valid image file."
        ) from None
    image = _apply_orientation(image, orientation)
    image = to_rgb(image)
    return np.asarray(fit(image, geometry, frame), dtype=np.uint8)


# --- geometry: from the decoded photo to the model's input ----------------------------------------

RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
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
        if self.resize not in ("center_crop", "squash", "letterbox"):
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
    and column (measured in tests/test_geometry.py).
    """
    frame = frame or Frame(image.size)
    where = placement(geometry, *frame.size)
    box = frame.map(where.box)
    resample = RESAMPLING[geometry.interpolation]
    if where.size == image.size and box == (0.0, 0.0, *map(float, image.size)):
        resized = image  # already the input size: nothing to resample (exact, and no copy)
    else:
        # reducing_gap 3: a large PNG is first box-reduced by a whole factor, then resampled;
        # 2-5x faster, within 0.3 mean / 3 max of the exact resample (tests/test_geometry.py).
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


def _apply_orientation(image: Image.Image, orientation: int) -> Image.Image:
    # Transposed here rather than by ImageOps.exif_transpose, which copies even an upright
    # image, and so that the orientation applied is the one `draft_for` planned with.
    method = _UPRIGHT.get(orientation)
    return image if method is None else image.transpose(method)


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
