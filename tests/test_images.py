import io

import numpy as np
import pytest
from PIL import Image

from patchcore import ImageError
from patchcore.errors import ImageTooLargeError
from patchcore.images import Preprocess, open_image
from tests.conftest import BOTTLE

GOOD = BOTTLE / "test" / "good" / "000.png"


def _encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "I;16", "LA", "CMYK"])
def test_every_mode_becomes_rgb(mode):
    source = Image.open(GOOD).convert("RGB").resize((64, 64))
    if mode == "I;16":
        array = (np.asarray(source.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
        image = Image.fromarray(array)
        assert image.mode == "I;16"
    else:
        image = source.convert(mode)
    fmt = "TIFF" if mode in ("I;16", "CMYK") else "PNG"
    decoded = open_image(_encoded(image, fmt))
    assert decoded.mode == "RGB"
    assert decoded.size == (64, 64)
    if mode == "I;16":  # 16-bit rescaled, not clipped to white
        assert 20 < np.asarray(decoded).mean() < 235


def test_bad_inputs_name_the_problem():
    with pytest.raises(ImageError, match="empty"):
        open_image(b"", name="x.png")
    with pytest.raises(ImageError, match="not a recognised image"):
        open_image(b"this is not an image", name="notes.txt")
    truncated = GOOD.read_bytes()[:5000]
    with pytest.raises(ImageError, match="cannot decode"):
        open_image(truncated, name="cut.png")


def test_pixel_limit_is_checked_before_decoding():
    with pytest.raises(ImageTooLargeError, match="810000 pixels"):
        open_image(GOOD.read_bytes(), max_pixels=500_000)


def test_preprocess_geometry_is_shared_by_images_and_masks():
    preprocess = Preprocess("crop", 256, 224)
    tensor = preprocess.tensor(open_image(GOOD))
    assert tensor.shape == (3, 224, 224)
    assert abs(float(tensor.mean())) < 3
    mask = preprocess.mask(BOTTLE / "ground_truth" / "broken_large" / "000_mask.png", (900, 900))
    assert mask.shape == (224, 224) and mask.dtype == bool and 0 < mask.mean() < 0.5


@pytest.mark.parametrize(
    "encoding", ["0/1", "labels", "red on black", "1-bit", "16-bit 1", "dark blue on black", "palette, 0 is white"]
)
def test_masks_read_alike_however_they_mark_defects(encoding):
    """MVTec AD marks defects 255; other sets 1, a label number per defect, or a colour: all are defects. A palette
    is read by its colours, not its indices."""
    source = BOTTLE / "ground_truth" / "broken_large" / "000_mask.png"
    defect = np.asarray(Image.open(source)) > 0
    if encoding == "0/1":
        other = Image.fromarray(defect.astype(np.uint8))
    elif encoding == "labels":
        other = Image.fromarray((defect * (1 + np.arange(defect.shape[1]) % 3)).astype(np.uint8))
    elif encoding == "red on black":
        other = Image.fromarray(np.stack([defect * 255, defect * 0, defect * 0], axis=-1).astype(np.uint8))
    elif encoding == "1-bit":
        other = Image.fromarray(defect).convert("1")
    elif encoding == "16-bit 1":
        other = Image.fromarray(defect.astype(np.uint16))
    elif encoding == "dark blue on black":  # 4 in blue is 0 in grey (0.114 x 4)
        other = Image.fromarray(np.stack([defect * 0, defect * 0, defect * 4], axis=-1).astype(np.uint8))
    else:  # the defect is index 0, coloured white; normal pixels are index 1, black
        other = Image.fromarray((~defect).astype(np.uint8), mode="P")
        other.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)
    stream = io.BytesIO()
    other.save(stream, format="PNG")
    preprocess = Preprocess("whole", pixels=224 * 224)
    expected = preprocess.mask(source, (900, 900))
    read = preprocess.mask(io.BytesIO(stream.getvalue()), (900, 900))
    assert expected.any() and np.array_equal(read, expected)


def test_exif_orientation_is_applied_and_odd_modes_decode():
    from tests.hostile_corpus import float_tiff_with_nan, rotated_jpeg

    upright = open_image(rotated_jpeg())
    assert upright.size == (256, 256)
    reference = np.asarray(Image.open(GOOD).convert("RGB").resize((256, 256)), dtype=np.float32)
    assert np.abs(np.asarray(upright, dtype=np.float32) - reference).mean() < 8  # not sideways (JPEG noise only)
    floats = np.asarray(open_image(float_tiff_with_nan()))
    assert floats.dtype == np.uint8 and floats[:4, :4].max() == 0 and floats.mean() > 20


def test_the_field_of_view_keeps_the_whole_part_and_refuses_extreme_shapes():
    from patchcore.errors import ImageShapeError

    whole = Preprocess("whole")
    view = whole.view(452, 184)
    assert (view.width, view.height) == (352, 144) and view.width % 16 == view.height % 16 == 0
    assert view.to_original(352, 144) == pytest.approx((452, 184))
    crop = Preprocess("crop").view(452, 184)
    assert crop.width == crop.height == 224 and crop.to_original(0, 0)[0] == pytest.approx(145.2, abs=0.5)
    for shape in ((10000, 2), (40_000_000, 1), (1, 17)):
        with pytest.raises(ImageShapeError, match="aspect ratio"):
            whole.view(*shape)
        with pytest.raises(ImageShapeError, match="aspect ratio"):
            Preprocess("crop").view(*shape)
    placed = Preprocess("crop").whole_image_map(np.ones((224, 224), np.float32), (452, 184))
    assert placed.shape == (144, 352)
    columns = np.flatnonzero(placed.max(0) > 0)
    assert 110 <= columns[0] <= 120 and 230 <= columns[-1] <= 240  # the middle 36% of the strip, nothing else
