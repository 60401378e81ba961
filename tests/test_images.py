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
    preprocess = Preprocess(256, 224)
    tensor = preprocess.tensor(open_image(GOOD))
    assert tensor.shape == (3, 224, 224)
    assert abs(float(tensor.mean())) < 3
    mask = preprocess.mask(BOTTLE / "ground_truth" / "broken_large" / "000_mask.png")
    assert mask.shape == (224, 224) and mask.dtype == bool and 0 < mask.mean() < 0.5
