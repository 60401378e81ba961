"""Images of more than 8 bits per sample (a 12-bit camera's samples in 16-bit files, gray or colour) are read against
the category's white level, found at the fit and applied to every query, so the network sees them as the camera meant
them."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from functools import partial
from pathlib import Path

import imagecodecs
import numpy as np
import psycopg
import pytest
import tifffile
from PIL import Image, PngImagePlugin

from benchmarks.high_bit_depth import write_twelve_bit
from patchcore.errors import ImageError
from patchcore.images import open_image, white_level
from patchcore.masks import read_mask
from patchcore.views import Preprocess
from tests.conftest import BOTTLE, ROOT, WEIGHTS, start_api


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_white_level_is_the_sensor_range_that_holds_the_brightest_sample(tmp_path):
    eight = tmp_path / "eight.png"
    Image.new("L", (8, 8), 200).save(eight)
    assert white_level([eight]) is None  # 8-bit images are read as they are
    dark = tmp_path / "dark.png"
    Image.fromarray(np.full((8, 8), 3000, dtype=np.uint16)).save(dark)
    assert white_level([eight, dark]) == 4095
    bright = tmp_path / "bright.png"
    Image.fromarray(np.full((8, 8), 4096, dtype=np.uint16)).save(bright)
    assert white_level([dark, bright]) == 8191
    faint = tmp_path / "faint.tif"
    Image.fromarray(np.full((8, 8), 20, dtype=np.uint16)).save(faint)
    assert white_level([faint]) == 255


def test_a_twelve_bit_image_is_read_against_the_white_level_and_not_scaled_by_its_own_brightest_pixel():
    samples = np.array([[0, 1024, 2048, 4095]] * 4, dtype=np.uint16)
    read = np.asarray(open_image(_png(samples), white_level=4095))[0, :, 0]
    assert read.tolist() == [0, 64, 128, 255]
    # without the category's white level a 16-bit file is read against its full range: nearly black, 16 levels
    assert np.asarray(open_image(_png(samples)))[0, :, 0].tolist() == [0, 4, 8, 16]
    # a darker picture of the same camera stays darker: one scale for the category, not one per image
    darker = np.asarray(open_image(_png(samples // 2), white_level=4095))[0, :, 0]
    assert darker.tolist() == [0, 32, 64, 127]
    with pytest.raises(ValueError, match="white level"):
        Preprocess(white_level=0)


@pytest.fixture(scope="module")
def twelve_bit(tmp_path_factory) -> Path:
    """40 of bottle's training images and 5 good and 5 broken test images as 12-bit grayscale, with masks."""
    root = tmp_path_factory.mktemp("twelve") / "data"
    files = sorted((BOTTLE / "train" / "good").glob("*.png"))[:40]
    files += sorted((BOTTLE / "test" / "good").glob("*.png"))[:5]
    files += sorted((BOTTLE / "test" / "broken_large").glob("*.png"))[:5]
    for seed, source in enumerate(files):
        write_twelve_bit(source, root / "bottle" / source.relative_to(BOTTLE), np.random.default_rng(seed))
    for source in files[-5:]:
        mask = BOTTLE / "ground_truth" / "broken_large" / f"{source.stem}_mask.png"
        target = root / "bottle" / mask.relative_to(BOTTLE)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(mask.read_bytes())
    return root


def test_a_twelve_bit_category_is_fitted_stored_and_served_at_its_white_level(twelve_bit, tmp_path, database_url):
    out = tmp_path / "reports"
    done = subprocess.run(
        [sys.executable, "-m", "ingest", "fit", "--data", str(twelve_bit), "--backbone", "resnet18", "--weights",
         str(WEIGHTS), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, "DATABASE_URL": database_url},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "bottle" / "report.json").read_text())
    assert report["config"]["white_level"] == 4095
    assert report["image_auroc"] == 1.0
    with psycopg.connect(database_url) as connection:
        stored = connection.execute("SELECT white_level FROM active_models WHERE category = 'bottle'").fetchone()
    assert stored == (4095,)
    broken = twelve_bit / "bottle" / "test" / "broken_large" / "000.png"
    fitted = next(i["score"] for i in report["images"] if i["file"].endswith("broken_large/000.png"))
    server, client = start_api({"DATABASE_URL": database_url}, tmp_path / "api.log")
    try:
        answer = client.post("/query", files={"file": ("000.png", broken.read_bytes(), "image/png")},
                             data={"category": "bottle"})  # fmt: skip
        assert answer.status_code == 200, answer.text
        # the served answer reads the upload at the stored white level: the score the fit's evaluation gave it
        # (the same image read against 65,535 reaches the network nearly black and scores otherwise)
        assert answer.json()["is_anomalous"] is True
        assert answer.json()["anomaly_score"] == pytest.approx(fitted, abs=1e-3)
    finally:
        client.close()
        server.terminate()
        server.wait(20)


def test_an_unreadable_training_file_is_named_when_the_white_level_is_sought(tmp_path):
    broken = tmp_path / "cut.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    with pytest.raises(ImageError, match=r"cut\.png"):
        white_level([broken])


def test_float_images_are_read_against_the_category_white_level_unless_they_lie_within_0_and_1(tmp_path):
    counts = tmp_path / "counts.tif"
    Image.fromarray(np.full((8, 8), 3000.5, dtype=np.float32)).save(counts)
    unit = tmp_path / "unit.tif"
    Image.fromarray(np.full((8, 8), 0.75, dtype=np.float32)).save(unit)
    assert white_level([unit]) is None
    assert white_level([unit, counts]) == 4095
    # a dim picture of a camera that writes counts as floats stays dim against the category's white level; on its
    # own it would be stretched to white
    dim = np.full((4, 4), 1023.75, dtype=np.float32)
    buffer = io.BytesIO()
    Image.fromarray(dim).save(buffer, format="TIFF")
    assert np.asarray(open_image(buffer.getvalue(), white_level=4095))[0, 0, 0] == 64
    assert np.asarray(open_image(buffer.getvalue()))[0, 0, 0] == 255
    assert np.asarray(open_image(unit))[0, 0, 0] == 191  # 0.75 of white, as before


def _turned(png: bytes, orientation: int, early: bool = False) -> bytes:
    """``png`` with an eXIf chunk that says how it is turned: after the pixels (before IEND), or ``early``, right
    after the header (IHDR: 25 bytes after the 8 of the signature)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = exif.tobytes()[6:]  # the TIFF structure without the "Exif\0\0" of JPEG's segment
    chunk = struct.pack(">I", len(data)) + b"eXIf" + data + struct.pack(">I", zlib.crc32(b"eXIf" + data))
    at = 33 if early else len(png) - 12
    return png[:at] + chunk + png[at:]


def _planar_tiff(samples: np.ndarray) -> bytes:
    """A TIFF that keeps each colour in a plane of its own (Pillow reads its 16-bit planes as if they had 8 bits)."""
    buffer = io.BytesIO()
    alpha = ["unassalpha"] if samples.shape[2] == 4 else None
    tifffile.imwrite(buffer, np.moveaxis(samples, 2, 0), photometric="rgb", planarconfig="separate", extrasamples=alpha)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "encode",
    [
        imagecodecs.png_encode, imagecodecs.tiff_encode, partial(imagecodecs.tiff_encode, compression="lzw"),
        _planar_tiff,
    ],
    ids=["png", "tiff", "lzw-tiff", "planar-tiff"],
)  # fmt: skip
def test_sixteen_bit_colour_keeps_its_low_bits_and_is_read_at_the_white_level(tmp_path, encode):
    samples = np.zeros((4, 6, 3), dtype=np.uint16)
    samples[..., 0], samples[..., 1], samples[..., 2] = 4095, 2048, 16
    samples[0, 5] = (0, 0, 4095)
    path = tmp_path / "colour.img"
    path.write_bytes(encode(samples))
    # Pillow alone keeps each sample's high byte (a 12-bit camera's white reads as 15 of 255), or reads planes wrong
    assert np.asarray(Image.open(path).convert("RGB"))[0, 0].tolist() != [255, 128, 1]
    assert white_level([path]) == 4095
    read = np.asarray(open_image(path, white_level=4095))
    assert read[0, 0].tolist() == [255, 128, 1]
    assert read[0, 5].tolist() == [0, 0, 255]
    assert np.asarray(open_image(path))[0, 0].tolist() == [16, 8, 0]  # without a white level: the file's full range
    # alpha is dropped, as for 8-bit images
    alpha = np.concatenate([samples, np.full((4, 6, 1), 65535, dtype=np.uint16)], axis=2)
    assert np.array_equal(np.asarray(open_image(encode(alpha), white_level=4095)), read)


def _turned_tiff(samples: np.ndarray, orientation: int) -> bytes:
    """A TIFF of ``samples`` whose Orientation tag says how it is turned (Pillow turns such a TIFF as it decodes it)."""
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, samples, photometric="rgb", extratags=[(274, "H", 1, orientation, True)])
    return buffer.getvalue()


@pytest.mark.parametrize(
    "turned",
    [lambda s, o: _turned(imagecodecs.png_encode(s), o), lambda s, o: _turned(imagecodecs.png_encode(s), o, True),
     _turned_tiff],
    ids=["png-exif-late", "png-exif-early", "tiff-tag"],
)  # fmt: skip
def test_sixteen_bit_colour_is_turned_upright_by_its_orientation(turned, monkeypatch):
    """Turned upright as its 8-bit picture is, a PNG by its eXIf chunk wherever it lies, without Pillow decoding
    the pixels that imagecodecs decodes (Pillow's way to a late eXIf)."""
    samples = np.zeros((4, 6, 3), dtype=np.uint16)
    samples[0, 5] = (0, 0, 4095)
    read = np.asarray(open_image(imagecodecs.png_encode(samples), white_level=4095))
    eight = np.asarray(open_image(turned((samples // 16).astype(np.uint8), 6)))  # read by Pillow alone
    with monkeypatch.context() as patched:
        patched.setattr(PngImagePlugin.PngImageFile, "load", lambda image: pytest.fail("Pillow decoded a 16-bit PNG"))
        # 6: shown turned 90 degrees clockwise, as the 8-bit picture of the same part is
        upright = np.asarray(open_image(turned(samples, 6), white_level=4095))
    assert upright.shape == (6, 4, 3)
    assert upright[5, 3].tolist() == [0, 0, 255]
    assert np.array_equal(upright, np.rot90(read, k=-1))
    assert np.array_equal(eight > 0, upright > 0)


def test_a_sixteen_bit_colour_mask_marks_a_defect_where_any_sample_is_not_zero(tmp_path):
    marks = np.zeros((4, 6, 3), dtype=np.uint16)
    marks[1, 2, 2] = 1  # a 16-bit 1 in one channel: its high byte is 0
    path = tmp_path / "mask.png"
    path.write_bytes(imagecodecs.png_encode(marks))
    assert np.argwhere(np.asarray(read_mask(path))).tolist() == [[1, 2]]
    with path.open("rb") as stream:
        assert np.argwhere(np.asarray(read_mask(stream))).tolist() == [[1, 2]]


def _netpbm(samples: np.ndarray, maxval: int = 65535) -> bytes:
    """A binary PPM (colour) or PGM (gray) of 16-bit ``samples``: big-endian after the header, as Netpbm stores them."""
    kind, (height, width) = (b"P6" if samples.ndim == 3 else b"P5"), samples.shape[:2]
    return kind + f"\n{width} {height}\n{maxval}\n".encode() + samples.astype(">u2").tobytes()


def test_sixteen_bit_netpbm_is_read_at_the_white_level_gray_or_colour(tmp_path):
    """A 12-bit camera's samples in a PPM or PGM of maxval 65,535 read as its 16-bit PNG's do, at the white level the
    category finds (Pillow alone cuts a colour PPM to 8 bits by its maxval: a 12-bit white reads as 16 of 255); a file
    whose maxval is 4,095 says its white itself, and reads alike; a 16-bit 1 in a PPM mask is a defect."""
    samples = np.zeros((4, 6, 3), dtype=np.uint16)
    samples[..., 0], samples[..., 1], samples[..., 2] = 4095, 2048, 16
    samples[0, 5] = (0, 0, 4095)
    colour = tmp_path / "colour.ppm"
    colour.write_bytes(_netpbm(samples))
    assert np.asarray(Image.open(colour).convert("RGB"))[0, 0].tolist() == [16, 8, 0]
    assert white_level([colour]) == 4095
    read = np.asarray(open_image(colour, white_level=4095))
    assert np.array_equal(read, np.asarray(open_image(imagecodecs.png_encode(samples), white_level=4095)))
    assert read[0, 0].tolist() == [255, 128, 1] and read[0, 5].tolist() == [0, 0, 255]
    declared = _netpbm(samples, maxval=4095)
    assert np.array_equal(np.asarray(open_image(declared, white_level=white_level([declared]))), read)
    gray = samples[..., 1].copy()
    gray[0, 0] = 4095
    assert white_level([_netpbm(gray)]) == 4095
    assert np.array_equal(np.asarray(open_image(_netpbm(gray), white_level=4095)),
                          np.asarray(open_image(_png(gray), white_level=4095)))  # fmt: skip
    marks = np.zeros((4, 6, 3), dtype=np.uint16)
    marks[1, 2, 2] = 1
    (tmp_path / "mask.ppm").write_bytes(_netpbm(marks))
    assert np.argwhere(np.asarray(read_mask(tmp_path / "mask.ppm"))).tolist() == [[1, 2]]
    with pytest.raises(ImageError, match="cannot decode"):
        open_image(_netpbm(samples)[:40], white_level=4095)
