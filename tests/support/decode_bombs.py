"""Worst-case uploads for the decode-memory tests: tiny files that decode to as many bytes as the
pixel limit allows, each made here (Pillow, or by hand where Pillow cannot write the format).

`KINDS` maps a name to a function (pixels) -> bytes that makes an image of about that many
pixels; `measure_decode` decodes one in a fresh process and reports its peak memory.
"""
from __future__ import annotations

import io
import json
import math
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from tests.support.harness import PROJECT
from tests.support.hostile_inputs import png_chunk


def _side(pixels: int) -> tuple[int, int]:
    side = math.isqrt(pixels)
    return side, pixels // side


def png_16bit_rgba(pixels: int) -> bytes:
    """A 16-bit RGBA PNG (Pillow cannot write one; zlib can): 8 bytes a pixel of zeros."""
    width, height = _side(pixels)
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
    row = b"\x00" + b"\x00" * (width * 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def png_16bit_grey(pixels: int) -> bytes:
    """A 16-bit greyscale PNG (mode I;16), a gradient so the scaling has work to do."""
    width, height = _side(pixels)
    values = (np.arange(width, dtype=np.uint32) * 65535 // max(1, width - 1)).astype(np.uint16)
    image = Image.fromarray(np.broadcast_to(values, (height, width)).copy())
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=9)
    return buffer.getvalue()


def float_tiff(pixels: int) -> bytes:
    """A 32-bit float TIFF in one deflate-compressed strip: libtiff decodes it all at once."""
    width, height = _side(pixels)
    image = Image.fromarray(np.full((height, width), 300.0, dtype=np.float32), "F")
    buffer = io.BytesIO()
    image.save(buffer, "TIFF", compression="tiff_adobe_deflate", tiffinfo={278: height})
    return buffer.getvalue()


def lossless_rgba_webp(pixels: int) -> bytes:
    """A lossless RGBA WebP of one colour: a few hundred bytes."""
    image = Image.new("RGBA", _side(pixels), (10, 200, 30, 128))
    buffer = io.BytesIO()
    image.save(buffer, "WEBP", lossless=True, quality=0, method=0)
    return buffer.getvalue()


def huge_gif_frame(pixels: int) -> bytes:
    """An animated GIF whose logical screen says 1x1 but whose first frame is huge (Pillow grows
    the image to the frame), then a second frame that must never be decoded."""
    width, height = _side(pixels)
    frames = [Image.new("P", (width, height), 1), Image.new("P", (width, height), 2)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    data = bytearray(buffer.getvalue())
    data[6:10] = struct.pack("<HH", 1, 1)  # logical screen width, height
    return bytes(data)


def exif_rotated_progressive_jpeg(pixels: int) -> bytes:
    """A progressive 4:4:4 JPEG tagged to rotate 90 degrees: libjpeg holds all its coefficients."""
    width, height = _side(pixels)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x % 256, y % 256, (x + y) % 256], axis=-1).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buffer, "JPEG", exif=exif, progressive=True, subsampling=0, quality=20)
    return buffer.getvalue()


KINDS: dict[str, Callable[[int], bytes]] = {
    "png16_rgba": png_16bit_rgba,
    "png16_grey": png_16bit_grey,
    "float_tiff": float_tiff,
    "webp_lossless_rgba": lossless_rgba_webp,
    "gif_huge_frame": huge_gif_frame,
    "jpeg_exif_progressive": exif_rotated_progressive_jpeg,
}

# Run with `python -c` in the checkout (its folder comes first on sys.path): argv is the upload,
# the side to decode it to and a small image to warm up with.
_PROBE = r"""
import json, sys
import numpy as np, PIL.Image
from keras_rest_api.imaging import decode as imaging

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

data = open(sys.argv[1], "rb").read()
size = (int(sys.argv[2]), int(sys.argv[2]))
cost = imaging.planned_cost(data, size, 10**9)
image = imaging.open_image(data, 10**9)
# Fault in a first decode of a tiny image so library set-up is not counted as the big decode's.
imaging.decode_image(open(sys.argv[3], "rb").read(), size, 10**9)
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset VmHWM to the current RSS
pixels = imaging.decode_image(data, size, 10**9)
print(json.dumps({"peak": status("VmHWM") - before, "cost": cost, "shape": list(pixels.shape),
                  "size": list(image.size), "mode": image.mode}))
"""


def measure_decode(data: bytes, side: int, workdir: Path) -> dict:
    """Decode `data` to side x side in a fresh Python; its peak RSS increase and decode_cost."""
    path = workdir / "upload.bin"
    path.write_bytes(data)
    warm = workdir / "warm.png"
    Image.new("RGB", (8, 8)).save(warm)
    out = subprocess.run([sys.executable, "-c", _PROBE, str(path), str(side), str(warm)], cwd=PROJECT,
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout)
