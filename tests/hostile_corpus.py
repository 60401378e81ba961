"""Crafted uploads, made here rather than stored as binaries: what an attacker (or an unlucky camera) sends.

Each case names the answer the service must give. Run as a script to write the files to a folder:
``python tests/hostile_corpus.py OUT``.
"""

from __future__ import annotations

import io
import struct
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import imagecodecs
import numpy as np
from PIL import Image

from tests.conftest import BOTTLE

GOOD = BOTTLE / "test" / "good" / "000.png"


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    status: int
    error: str | None = None  # the JSON error code, None for a 200
    words: str = ""  # in the error's detail
    form: dict = field(default_factory=dict)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` 8-bit gray pixels and holds a few bytes of data: its header is
    all a careful decoder reads before refusing it."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _chunk(b"IEND", b"")
    )


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _bottle(size: int = 256) -> Image.Image:
    return Image.open(GOOD).convert("RGB").resize((size, size))


def animated_png() -> bytes:
    frames = [_bottle(64), _bottle(64).rotate(90)]
    return _encoded(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100, loop=0)


def rotated_jpeg() -> bytes:
    """The good bottle stored sideways with EXIF orientation 6 ("rotate 90 clockwise to view"), as phones do."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encoded(_bottle().transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif)


def float_tiff_with_nan() -> bytes:
    array = np.asarray(_bottle().convert("L"), dtype=np.float32) / 255.0
    array[:4, :4] = np.nan
    return _encoded(Image.fromarray(array, mode="F"), "TIFF")


def sixteen_bit_png() -> bytes:
    array = np.asarray(_bottle().convert("L"), dtype=np.uint16) * 257
    return _encoded(Image.fromarray(array), "PNG")


def sixteen_bit_colour_tiff() -> bytes:
    """The bottle as 16-bit RGB samples in an LZW TIFF (which Pillow alone reads by each sample's high byte)."""
    return imagecodecs.tiff_encode(np.asarray(_bottle(), dtype=np.uint16) * 257, compression="lzw")


def sixteen_bit_ppm() -> bytes:
    """A binary PPM of 16-bit samples, as Netpbm stores them (big-endian), read past Pillow by NumPy."""
    samples = np.asarray(_bottle(), dtype=np.uint16) * 257
    return b"P6\n256 256\n65535\n" + samples.astype(">u2").tobytes()


def corpus() -> list[Case]:
    good = GOOD.read_bytes()
    return [
        Case("extreme aspect 10000x2", _encoded(Image.new("RGB", (10000, 2)), "PNG"), 422, "unsupported_image_shape",
             "aspect ratio of 5000:1"),
        Case("extreme aspect 20000x1 header", png_header_only(20000, 1), 422, "unsupported_image_shape", "20000x1"),
        Case("40,000,000 x 1 header", png_header_only(40_000_000, 1), 413, "image_too_large", "40000000x1"),
        Case("decompression bomb 20000x20000", png_header_only(20000, 20000), 413, "image_too_large", "pixels"),
        Case("NUL in the category", good, 422, "invalid_request", "category", {"category": "bot\0tle"}),
        Case("SQL in the category", good, 422, "invalid_request", "category", {"category": "x'; DROP TABLE models;--"}),
        Case("a 500-character category", good, 422, "invalid_request", "category", {"category": "a" * 500}),
        Case("NUL in top_k", good, 422, "invalid_request", "top_k", {"top_k": "1\0"}),
        Case("animated PNG", animated_png(), 415, "unsupported_image", "animated"),
        Case("GIF", _encoded(_bottle(64), "GIF"), 415, "unsupported_image", "not a recognised image"),
        Case("truncated PNG", good[:3000], 415, "unsupported_image", "cannot decode"),
        Case("text", b"GET / HTTP/1.1\r\n\r\n", 415, "unsupported_image", "not a recognised image"),
        Case("EXIF-rotated JPEG", rotated_jpeg(), 200),
        Case("CMYK JPEG", _encoded(_bottle().convert("CMYK"), "JPEG"), 200),
        Case("16-bit PNG", sixteen_bit_png(), 200),
        Case("16-bit colour TIFF", sixteen_bit_colour_tiff(), 200),
        Case("truncated 16-bit colour PNG", imagecodecs.png_encode(np.asarray(_bottle(), dtype=np.uint16))[:9000], 415,
             "unsupported_image", "cannot decode"),
        Case("float TIFF with NaN", float_tiff_with_nan(), 200),
        Case("1-bit PNG", _encoded(_bottle().convert("1"), "PNG"), 200),
        Case("PBM", _encoded(_bottle().convert("1"), "PPM"), 200),
        Case("16-bit PPM", sixteen_bit_ppm(), 200),
        Case("PGM bomb 20000x20000 header", b"P5\n20000 20000\n255\n" + bytes(64), 413, "image_too_large", "pixels"),
        Case("truncated 16-bit PPM", sixteen_bit_ppm()[:9000], 415, "unsupported_image", "cannot decode"),
        Case("PGM of maxval 0", b"P5\n8 8\n0\n" + bytes(64), 415, "unsupported_image", "maxval"),
    ]  # fmt: skip


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for case in corpus():
        (out / (case.name.replace(" ", "_").replace(",", "") + ".bin")).write_bytes(case.data)
        print(f"{case.name}: {len(case.data)} bytes, expects {case.status} {case.error or ''}")
