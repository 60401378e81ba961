import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from patchcore import ImageError
from patchcore.errors import ImageTooLargeError
from patchcore.images import ORIENTATION, open_image, original_size
from patchcore.views import Preprocess
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


@pytest.mark.parametrize("variant", ["RGB", "RGBA", "RGB with a transparent colour", "RGB turned by EXIF"])
def test_a_colour_png_decodes_to_pillows_own_samples(variant, tmp_path):
    """8-bit colour PNGs are decoded by libspng rather than Pillow (faster): the same samples, upright, from bytes and
    from a file alike; a damaged one is refused by name."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (37, 53, 4), dtype=np.uint8)).convert(variant[:4].strip())
    options = {}
    if variant == "RGB with a transparent colour":
        options["transparency"] = (0, 0, 0)
    if variant == "RGB turned by EXIF":
        exif = Image.Exif()
        exif[ORIENTATION] = 6
        options["exif"] = exif
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    data = buffer.getvalue()
    with Image.open(io.BytesIO(data)) as reference:
        expected = np.asarray(ImageOps.exif_transpose(reference.convert("RGB")))
    path = tmp_path / "part.png"
    path.write_bytes(data)
    for source in (data, path):
        decoded = open_image(source)
        assert decoded.mode == "RGB" and np.array_equal(np.asarray(decoded), expected)
    assert expected.shape == ((53, 37, 3) if variant == "RGB turned by EXIF" else (37, 53, 3))
    damaged = bytearray(data)
    damaged[-40:-30] = bytes(10)
    with pytest.raises(ImageError, match=r"part\.png: cannot decode"):
        open_image(bytes(damaged), name="part.png")


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
    for shape in ((10000, 2), (40_000_000, 1), (1, 65)):
        with pytest.raises(ImageShapeError, match="aspect ratio"):
            whole.view(*shape)
        with pytest.raises(ImageShapeError, match="aspect ratio"):
            Preprocess("crop").view(*shape)
    with pytest.raises(ImageShapeError, match="at most 16:1 is inspected in the crop field of view"):
        Preprocess("crop").view(1250, 55)
    rail = whole.view(1250, 55)  # 23:1, a rail's photograph: whole at the budget, no side below MIN_SIDE
    assert (rail.width, rail.height) == (1072, 48)
    thinnest = whole.view(64 * 40, 40)  # 64:1: the short side held at 32, the view 1.14x the budget at most
    assert (thinnest.width, thinnest.height) == (1792, 32) and thinnest.width * thinnest.height <= 1.15 * 224 * 224
    # one patch (8 view pixels) in the image's own pixels: 452/352 x 184/144 of them on the strip, 4 finer at 4x
    assert whole.footprint(452, 184, 8) == pytest.approx((8 * 452 / 352, 8 * 184 / 144))
    assert Preprocess("whole", pixels=4 * 224 * 224).footprint(1024, 1024, 8) == pytest.approx((18.29, 18.29), abs=0.01)
    assert Preprocess("crop").footprint(452, 184, 8) == pytest.approx((8 * 452 / 629, 8 * 184 / 256))  # 629x256
    placed = Preprocess("crop").whole_image_map(np.ones((224, 224), np.float32), (452, 184))
    assert placed.shape == (144, 352)
    columns = np.flatnonzero(placed.max(0) > 0)
    assert 110 <= columns[0] <= 120 and 230 <= columns[-1] <= 240  # the middle 36% of the strip, nothing else


def test_an_image_enlarged_more_than_every_good_image_was_gets_a_note_and_no_other_does():
    """The note is relative to the scales the good images were seen at: a thumbnail of a category photographed large
    is noted, an image as small as a category's own small good images is not, nor is any image reduced to the view."""
    from patchcore.views import size_notes

    whole, crop = Preprocess("whole"), Preprocess("crop")
    bottle = whole.view(900, 900).enlargement  # bottle's good images: reduced to the view
    assert bottle == pytest.approx(224 / 900)
    (note,) = size_notes(whole.view(40, 40), (40, 40), bottle)
    assert note.startswith("the image is 40x40 pixels, enlarged 5.60 times to the model's 224x224 view, where the "
                           "category's good images were reduced to it")  # fmt: skip
    assert size_notes(whole.view(300, 300), (300, 300), bottle) == []  # reduced too: nothing to say
    tiles = whole.view(128, 128).enlargement  # a set of small tiles, each enlarged 1.75 times
    assert size_notes(whole.view(128, 128), (128, 128), tiles) == []
    (smaller,) = size_notes(whole.view(64, 64), (64, 64), tiles)
    assert "enlarged 3.50 times" in smaller and "good images were enlarged at most 1.75 times" in smaller
    # the crop's scale is its short side's: a 200x100 strip enlarged 2.56 times to its 256 resize
    (strip,) = size_notes(crop.view(200, 100), (200, 100), crop.view(900, 900).enlargement)
    assert "200x100 pixels, enlarged 2.56 times" in strip
    assert size_notes(whole.view(40, 40), (40, 40), None) == []  # a version without good images' sizes


def test_a_mask_at_another_scale_is_scaled_to_its_image_and_one_of_another_shape_refused():
    """A mask saved at half (or twice) its image's resolution marks the same pixels of the view; one of another shape
    cannot say which pixels it covers."""
    from patchcore.errors import ImageShapeError

    source = BOTTLE / "ground_truth" / "broken_large" / "000_mask.png"
    full = Image.open(source)
    for preprocess in (Preprocess("whole"), Preprocess("crop")):
        exact = preprocess.mask(source, full.size)
        assert exact.sum() > 1000
        for scale in (0.5, 2.0):
            buffer = io.BytesIO()
            full.resize((round(full.width * scale), round(full.height * scale)), Image.NEAREST).save(buffer, "PNG")
            scaled = preprocess.mask(buffer, full.size)
            assert scaled.shape == exact.shape and (scaled != exact).mean() < 0.002, (scale, (scaled != exact).mean())
    skewed = io.BytesIO()
    full.resize((450, 300), Image.NEAREST).save(skewed, "PNG")
    with pytest.raises(ImageShapeError, match="the mask is 450x300, its image 900x900: not the image's shape"):
        Preprocess("whole").mask(skewed, full.size)


def _camera_jpeg(size: tuple[int, int], orientation: int = 1) -> bytes:
    """Bottle at a camera's size as a JPEG (quality 95), with an EXIF orientation."""
    image = Image.open(GOOD).convert("RGB").resize(size, Image.BICUBIC)
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, exif=exif)
    return buffer.getvalue()


@pytest.mark.parametrize("field_of_view", ["whole", "crop"])
def test_a_large_jpeg_is_decoded_small_and_seen_as_in_full(field_of_view):
    """A camera's JPEG is decoded by libjpeg at a reduced DCT scale that still holds twice the view, yet the view
    lies where a full decode puts it (the original's size sets the geometry) and looks the same to the network but
    for the scaling's own rounding; a version fitted before (``jpeg_scaling`` off) and a PNG are decoded in full."""
    data = _camera_jpeg((3600, 2400))
    scaled = Preprocess(field_of_view)
    decoded = scaled.decode(data)
    assert decoded.size == (900, 600) and original_size(decoded) == (3600, 2400)  # a quarter of each side
    view = scaled.view(3600, 2400)
    assert all(2 * r <= d < 4 * r for r, d in zip(view.resized, decoded.size, strict=True))  # twice the view, at least
    full = Preprocess(field_of_view, jpeg_scaling=False)
    whole = full.decode(data)
    assert whole.size == original_size(whole) == (3600, 2400)
    near, exact = scaled.tensor(decoded), full.tensor(whole)
    assert near.shape == exact.shape == (3, view.height, view.width)
    assert (near - exact).abs().mean() < 0.02 and (near - exact).abs().max() < 0.5  # normalised units: ~4 grey levels
    png = scaled.decode(_encoded(Image.open(GOOD).convert("RGB").resize((1800, 1200))))
    assert png.size == original_size(png) == (1800, 1200)


def test_a_turned_jpeg_is_decoded_small_on_its_upright_sides():
    data = _camera_jpeg((3600, 2400), orientation=6)  # stored landscape, shown portrait
    decoded = Preprocess().decode(data)
    assert original_size(decoded) == (2400, 3600) and decoded.size == (600, 900)
    reference = Preprocess(jpeg_scaling=False).decode(data)
    assert reference.size == (2400, 3600)
    small = np.asarray(reference.resize(decoded.size, Image.BILINEAR), dtype=np.float32)
    assert np.abs(np.asarray(decoded, dtype=np.float32) - small).mean() < 4  # upright both, not sideways


def test_a_webp_decodes_to_its_pixels_and_a_picture_of_a_kind_not_read_is_refused_by_name(tmp_path):
    """WebP, lossless and lossy, in RGB and RGBA, reads as the same pixels as a PNG would (lossless) or within its
    compression (lossy); a folder of images that holds a GIF is refused naming it and how many, where passing it
    over would fit the product without it unsaid; a file that is no picture (a note) stays out quietly."""
    from patchcore.images import format_suffix, image_files_in

    source = Image.open(GOOD).convert("RGB").resize((96, 96))
    buffer = io.BytesIO()
    source.save(buffer, format="WEBP", lossless=True)
    assert np.array_equal(np.asarray(open_image(buffer.getvalue())), np.asarray(source))
    assert format_suffix(buffer.getvalue()) == ".webp"  # a job's upload keeps its kind
    lossy = io.BytesIO()
    source.convert("RGBA").save(lossy, format="WEBP", quality=90)
    decoded = np.asarray(open_image(lossy.getvalue()), dtype=np.float32)
    assert decoded.shape == (96, 96, 3) and np.abs(decoded - np.asarray(source, dtype=np.float32)).mean() < 4
    for name in ("a.png", "b.webp", "notes.txt"):
        (tmp_path / name).write_bytes({"a.png": _encoded(source), "b.webp": buffer.getvalue()}.get(name, b"a note"))
    assert [p.name for p in image_files_in(tmp_path)] == ["a.png", "b.webp"]
    frames = io.BytesIO()  # an animated WebP is refused as an animated GIF or PNG is: which frame is the part?
    source.save(frames, format="WEBP", save_all=True, append_images=[source.rotate(90)])
    with pytest.raises(ImageError, match="animated or multi-page"):
        open_image(frames.getvalue())
    source.save(tmp_path / "c.gif")
    source.save(tmp_path / "d.gif")
    with pytest.raises(ImageError, match=r": 2 of its files are pictures of a kind not read here \(as c\.gif\); PNG"):
        image_files_in(tmp_path)


@pytest.mark.parametrize(("kind", "quality"), [("JPEG", 50), ("JPEG", 95), ("WEBP", 50), ("WEBP", 90)])
def test_a_lossy_mask_marks_its_defect_not_its_codec_s_ringing(kind, quality):
    """A mask saved as a JPEG rings around its strokes (bottle's broken_large/000 at quality 50: 3,757 pixels of
    1 to 127 beside the 88,192 marked), a lossy WebP too (5,317 at 50); read by what lies above half its brightest
    sample, it is the PNG's exactly. A lossless WebP keeps every non-zero pixel a defect, as a PNG does."""
    from patchcore.masks import read_mask

    source = BOTTLE / "ground_truth" / "broken_large" / "000_mask.png"
    truth = np.asarray(Image.open(source)) > 0
    stream = io.BytesIO()
    Image.open(source).convert("L").save(stream, format=kind, quality=quality)
    assert (np.asarray(Image.open(io.BytesIO(stream.getvalue())).convert("L")) > 0).sum() > truth.sum() + 2000
    assert np.array_equal(np.asarray(read_mask(io.BytesIO(stream.getvalue()))) > 0, truth)
    if kind == "WEBP":  # with an alpha channel a WebP is an extended file (VP8X), its lossy picture in a later chunk
        grey = Image.open(source).convert("L")
        alpha = Image.new("L", grey.size, 255)
        alpha.putpixel((0, 0), 0)
        extended = io.BytesIO()
        Image.merge("RGBA", (grey, grey, grey, alpha)).save(extended, format="WEBP", quality=quality)
        assert extended.getvalue()[12:16] == b"VP8X"
        assert np.array_equal(np.asarray(read_mask(io.BytesIO(extended.getvalue()))) > 0, truth)
    labels = io.BytesIO()  # a label mask of 1s, lossless: a 1 is a defect, not ringing
    Image.fromarray(truth.astype(np.uint8)).save(labels, format="WEBP", lossless=True)
    assert np.array_equal(np.asarray(read_mask(io.BytesIO(labels.getvalue()))) > 0, truth)


def test_netpbm_reads_as_the_png_it_was_made_from_and_a_folder_of_it_is_read(tmp_path):
    """PGM, PPM and PBM (as machine-vision libraries and line-camera tools write them), binary or plain text, read
    as the same pixels as the PNG of the same picture; a gray PFM's floats are read as a float TIFF's; a job's upload
    keeps the kind, and a folder of them is read, not refused by name."""
    from patchcore.images import format_suffix, image_files_in

    source = Image.open(GOOD).convert("RGB").resize((96, 64))
    gray, ink = source.convert("L"), source.convert("1")
    expected = {"PPM": source, "PGM": gray.convert("RGB"), "PBM": ink.convert("RGB")}
    binary = {name: _encoded(image, "PPM") for name, image in (("PPM", source), ("PGM", gray), ("PBM", ink))}
    assert [data[:2] for data in binary.values()] == [b"P6", b"P5", b"P4"]
    for name, data in binary.items():
        assert np.array_equal(np.asarray(open_image(data)), np.asarray(expected[name])), name
        assert format_suffix(data) == ".pnm"
    samples = np.asarray(gray)
    plain = f"P2\n# a comment, as tools write\n96 64\n255\n{' '.join(map(str, samples.ravel()))}\n".encode()
    assert np.array_equal(np.asarray(open_image(plain)), np.asarray(expected["PGM"]))
    floats = np.asarray(gray, dtype="<f4") / 255  # a PFM stores its rows from the bottom up
    pfm = b"Pf\n96 64\n-1.0\n" + np.ascontiguousarray(floats[::-1]).tobytes()
    assert np.abs(np.asarray(open_image(pfm), dtype=int) - np.asarray(expected["PGM"], dtype=int)).max() <= 1
    assert format_suffix(pfm) == ".pfm"
    for name, data in (("a.pgm", binary["PGM"]), ("b.ppm", binary["PPM"]), ("c.pnm", plain), ("d.pfm", pfm)):
        (tmp_path / name).write_bytes(data)
    assert [p.name for p in image_files_in(tmp_path)] == ["a.pgm", "b.ppm", "c.pnm", "d.pfm"]
    with pytest.raises(ImageError, match="cannot decode"):
        open_image(binary["PPM"][:5000])


def test_a_grey_file_of_a_colour_category_gets_a_note_and_the_reverse_too():
    """A file of one channel is grey, a colour file with colour anywhere is colour, a colour file without any is
    neutral (a grey picture kept as a colour JPEG, or a colour camera's JPEG of a grey part with its faint chroma
    rounded away); the note is relative to the category's own images and rests on grey and colour alone: nothing
    where either side is neutral, the good images are mixed or not known (stored before migration 0028)."""
    from patchcore.views import colour_notes, colouring

    preprocess = Preprocess("whole")

    def kind(data: bytes) -> str:
        image = preprocess.decode(data)
        return colouring(image, preprocess.cropped(image))

    def encoded(image: Image.Image, fmt: str, **options) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **options)
        return buffer.getvalue()

    colour = Image.open(BOTTLE / "train" / "good" / "000.png").convert("RGB")
    grey = colour.convert("L")
    assert kind(encoded(colour, "PNG")) == kind(encoded(colour, "JPEG")) == "colour"
    assert kind(encoded(grey, "PNG")) == kind(encoded(grey, "JPEG")) == kind(encoded(grey, "TIFF")) == "grey"
    assert kind(encoded(Image.fromarray(np.asarray(grey).astype(np.uint16) * 257), "PNG")) == "grey"  # 16 bits
    assert kind(encoded(grey.convert("RGB"), "PNG")) == kind(encoded(grey.convert("RGB"), "JPEG")) == "neutral"
    rng = np.random.default_rng(0)  # a grey part through a colour camera: one level of noise in each channel
    noisy = np.asarray(grey, dtype=np.int16)[..., None] + rng.integers(-1, 2, (*grey.size[::-1], 3))
    camera = Image.fromarray(noisy.clip(0, 255).astype(np.uint8))
    assert kind(encoded(camera, "PNG")) == "colour" and kind(encoded(camera, "JPEG", quality=75)) == "neutral"
    tinted = grey.convert("RGB")  # a label of colour on a grey part is colour; a pixel of it is lost in the view
    tinted.putpixel((450, 450), (120, 121, 120))
    assert kind(encoded(tinted, "PNG")) == "neutral"
    tinted.paste((120, 124, 120), (430, 430, 470, 470))
    assert kind(encoded(tinted, "PNG")) == "colour"
    assert colour_notes("grey", {"colour"})[0].startswith("the image is grey (a file of one channel), where every")
    assert colour_notes("colour", {"grey"})[0].startswith("the image has colour, where every good image of the")
    quiet = [("grey", {"grey"}), ("colour", {"colour"}), ("neutral", {"colour"}), ("neutral", {"grey"}),
             ("grey", {"neutral"}), ("colour", {"neutral"}), ("grey", {"colour", "neutral"}),
             ("colour", {"grey", "neutral"}), ("grey", {"colour", None}), ("colour", {"grey", None}),
             ("grey", set()), ("colour", set())]  # fmt: skip
    for image, good in quiet:
        assert colour_notes(image, good) == [], (image, good)
