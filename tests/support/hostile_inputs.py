"""A catalogue of hostile and awkward uploads, made with Pillow, for the unit and e2e tests.

Each awkward image must be classified (200); each hostile upload must get a 4xx JSON error.
"""
from __future__ import annotations

import io
import struct
import zlib
from typing import Callable

import numpy as np
from PIL import Image


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_claiming(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR (8-bit RGB) claiming width x height, with a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


NOT_IMAGES = {
    "plain text": b"hello, this is just some text\n" * 10,
    "html": b"<!DOCTYPE html><html><head><title>x</title></head><body><img src='dog.jpg'></body></html>",
    "svg": b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b'<rect width="10" height="10" fill="red"/></svg>',
    "pdf": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< >>\n%%EOF\n",
    "random bytes": np.random.default_rng(1234).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    "json": b'{"image": "dog.jpg"}',
}


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (40, 30), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buffer.getvalue()


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(noise(60, 40), "JPEG", exif=exif)


def _sixteen_bit() -> bytes:
    values = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    image = Image.fromarray(values)  # uint16 gives mode I;16
    assert image.mode == "I;16", image.mode
    return encode(image, "PNG")


AWKWARD_IMAGES: dict[str, Callable[[], bytes]] = {
    "grayscale": lambda: encode(noise(50, 40).convert("L"), "PNG"),
    "cmyk jpeg": lambda: encode(noise(50, 40).convert("CMYK"), "JPEG"),
    "16-bit png": _sixteen_bit,
    "palette": lambda: encode(noise(50, 40).convert("P"), "PNG"),
    "rgba": lambda: encode(noise(50, 40).convert("RGBA"), "PNG"),
    "animated gif": _animated_gif,
    "exif rotated": _exif_rotated,
    "1x1": lambda: encode(noise(1, 1), "PNG"),
    "very thin": lambda: encode(noise(3000, 1), "PNG"),
    "bmp": lambda: encode(noise(50, 40), "BMP"),
    "webp": lambda: encode(noise(50, 40), "WEBP"),
    "tiff": lambda: encode(noise(50, 40), "TIFF"),
}

HOSTILE_UPLOADS: dict[str, tuple[Callable[[], bytes], int]] = {
    **{name: ((lambda data=data: data), 400) for name, data in NOT_IMAGES.items()},
    "empty": (lambda: b"", 400),
    "truncated jpeg": (lambda: encode(noise(200, 150), "JPEG")[:1500], 400),
    "truncated png": (lambda: encode(noise(200, 150), "PNG")[:5000], 400),
    "png bomb 20000x20000": (lambda: png_header_claiming(20_000, 20_000), 413),
    "png bomb 100000x100000": (lambda: png_header_claiming(100_000, 100_000), 413),
    "png bomb 1x4000000000": (lambda: png_header_claiming(1, 4_000_000_000), 413),
}
