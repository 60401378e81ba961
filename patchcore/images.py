"""Reading images of any common mode into RGB, and the field of view: what part of an image the model sees, at
what size, and where each of its pixels lies in the original.

Factories use 8-bit RGB, 16-bit grayscale TIFFs, palette PNGs and RGBA screenshots alike; every one of them is
turned into 8-bit RGB here so the backbone always sees the distribution it was trained on. An image of more than 8
bits per sample (grayscale, float, or 16-bit colour) is read against its category's white level (:func:`white_level`):
a 12-bit camera's samples saved in a 16-bit file use a sixteenth of the file's range, and read against 65,535 they
would reach the network nearly black, in 16 grey levels. Pillow itself cuts 16-bit colour to the high byte of each
sample, so a 16-bit colour PNG or TIFF is decoded again by imagecodecs (libpng, libtiff) for its full samples. An
8-bit colour PNG is decoded by libspng (imagecodecs): the same samples as Pillow's (PNG is lossless) in about 2/3 of
the time, and decoding is most of what a query's decode stage costs (gray PNGs take Pillow as long).
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import imagecodecs
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from patchcore.errors import ImageError, ImageShapeError, ImageTooLargeError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
FORMATS = ("PNG", "JPEG", "BMP", "TIFF")
_SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif"}
ORIENTATION = 0x0112  # the EXIF tag
TURNED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
ORIGINAL_SIZE = "patchcore.original_size"  # image.info: (width, height) as sent, upright, when decoded smaller
FIELDS_OF_VIEW = ("whole", "crop")
ALIGN = 16  # view sides are multiples of the deepest used stride (layer3: 16), so every layer's grid is exact
MIN_SIDE = 32
# The most elongated image inspected, per field of view. crop: its resize before the centre square is cut grows with
# the aspect ratio (4096x256 at 16:1). whole: the view keeps about the pixel budget until its short side reaches
# MIN_SIDE (at 224x224's budget near 49:1), then grows with the ratio; 64:1 bounds it at 1792x32, 1.14x that budget,
# which holds thin real parts (a rail's 55x1250 photographs, 23:1; line-scan strips) whole.
MAX_ASPECT = {"whole": 64.0, "crop": 16.0}
_SINGLE_CHANNEL = ("1", "L", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # read as they are: a 16-bit 1 is a defect
_HIGH_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # integer samples of more than 8 bits
_WIDE = {"RGB": 3, "RGBA": 3, "LA": 1}  # a PNG's 16-bit samples Pillow cuts to 8 bits, by raw mode: colour channels
_PLAIN = ("RGB", "RGBA")  # 8-bit colour PNGs' raw modes: libspng decodes them in about 2/3 of Pillow's time
_BITS_PER_SAMPLE, _PHOTOMETRIC, _PLANAR_CONFIGURATION, _SAMPLE_FORMAT = 258, 262, 284, 339  # TIFF tags
_RGB, _SEPARATE_PLANES = 2, 2  # their values for RGB samples, and for one plane per colour
_WIDE_DECODERS = {"PNG": imagecodecs.png_decode, "TIFF": imagecodecs.tiff_decode}
MAX_WHITE_LEVEL = 2**31 - 1


def white_level(paths: Iterable[Path]) -> int | None:
    """The sample value that reads as white in a category's images of more than 8 bits per sample: ``2**k - 1`` for
    the fewest bits ``k`` (at least 8) that hold the brightest sample of any of ``paths``; None when none of them has
    more than 8 bits (they are read as they are). Float images count by their brightest value rounded up, unless
    they lie within 0 to 1, which is read against 1 as before. A sensor's bit depth is a property of the camera,
    not of one picture, so it is fixed for the category at its fit and every query is read against it: a 12-bit
    camera's images, saved in 16-bit files, read as 12-bit (white 4,095) whatever one of them holds, and a bright
    defect shows as bright, where scaling each image by its own brightest pixel would hide it. Only high-bit and
    float images are decoded; the others are told by their header."""
    brightest: int | None = None
    for path in paths:
        try:
            with Image.open(path, formats=FORMATS) as image:
                channels = _wide_channels(image)
                if channels:
                    top = float(_wide_samples(path.read_bytes(), image, channels, str(path)).max(initial=0))
                elif image.mode not in (*_HIGH_BIT, "F"):
                    continue
                else:
                    top = float(_finite(image).max(initial=0))
                    if image.mode == "F" and top <= 1.0:  # floats from 0 to 1: read against 1, as they are meant
                        continue
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
            raise ImageError(f"{path}: cannot read the image ({exc})") from exc
        brightest = max(brightest or 0, math.ceil(top))
    return None if brightest is None else min((1 << max(8, brightest.bit_length())) - 1, MAX_WHITE_LEVEL)


def _wide_channels(image: Image.Image) -> int:
    """How many colour channels of a 16-bit colour (or gray and alpha) PNG or TIFF to read, from its header, before
    it is decoded: Pillow reduces such samples to their high byte, so a 12-bit camera's LSB-aligned colour would read
    as 0-15 (and a TIFF's separate colour planes of 16 bits as if they had 8). 0 for every other image."""
    if image.format == "TIFF":
        tags = image.tag_v2
        sample_format = tags.get(_SAMPLE_FORMAT, 1)
        unsigned = (sample_format[0] if isinstance(sample_format, tuple) else sample_format) == 1
        bits = tags.get(_BITS_PER_SAMPLE, (8,))
        wide = max(bits) if isinstance(bits, tuple) else bits
        return 3 if tags.get(_PHOTOMETRIC) == _RGB and unsigned and 8 < wide <= 16 else 0
    base, bits = _png_raw_mode(image)
    return _WIDE.get(base, 0) if bits.startswith("16") else 0


def _plain_colour(image: Image.Image) -> bool:
    """Whether ``image`` is an 8-bit colour PNG (alpha or not), from its header; every other image (gray, a palette,
    16 bits, another format) Pillow decodes."""
    base, bits = _png_raw_mode(image)
    return not bits and base in _PLAIN


def _png_raw_mode(image: Image.Image) -> tuple[str, str]:
    """A PNG's raw mode as Pillow reads it from the header, split at ``;`` ("RGB", "16B" for 16-bit colour; "L", ""
    for 8-bit gray); ("", "") for any other image."""
    if image.format != "PNG" or not image.tile:
        return "", ""
    args = image.tile[0][3]
    base, _, bits = (args if isinstance(args, str) else args[0]).partition(";")
    return base, bits


def _wide_samples(data: bytes, image: Image.Image, channels: int, label: str) -> np.ndarray:
    """(height, width, channels) float samples of ``image``, a 16-bit PNG or TIFF (its bytes ``data``), decoded in
    full by imagecodecs, alpha dropped."""
    return _samples(_WIDE_DECODERS[image.format], data, image, channels, label).astype(np.float32)  # exact below 2**24


def _samples(
    decode: Callable[[bytes], np.ndarray], data: bytes, image: Image.Image, channels: int, label: str
) -> np.ndarray:
    """(height, width, channels) samples of ``image``, a PNG or TIFF (its bytes ``data``), decoded by one of
    imagecodecs' decoders as stored, alpha dropped."""
    try:
        samples = decode(data)
    except (RuntimeError, ValueError, LookupError) as exc:  # each codec fails in its own way on a broken file
        raise ImageError(f"{label}: cannot decode the image ({exc})") from exc
    if image.format == "TIFF" and image.tag_v2.get(_PLANAR_CONFIGURATION) == _SEPARATE_PLANES:
        samples = np.moveaxis(samples, 0, -1)  # decoded plane by plane: (channels, height, width)
    samples = samples.reshape(*samples.shape[:2], -1)
    if samples.shape[:2] not in (image.size[::-1], image.size) or samples.shape[2] < channels:  # a TIFF's turned
        raise ImageError(f"{label}: its samples ({samples.shape}) do not match its header ({image.size}, {image.mode})")
    return samples[..., :channels]


def _png_exif(data: bytes) -> Image.Exif:
    """A PNG's EXIF (its ``eXIf`` chunk, before or after the pixels), found by walking the chunks' headers: Pillow
    reaches one that follows the pixels only by decoding them, which a 16-bit colour PNG, decoded by imagecodecs,
    would pay twice."""
    exif = Image.Exif()
    at = 8  # after the signature: length, type, data, CRC per chunk
    while at + 8 <= len(data):
        length, kind = int.from_bytes(data[at : at + 4], "big"), data[at + 4 : at + 8]
        if kind == b"eXIf":
            exif.load(data[at + 8 : at + 8 + length])
            break
        if kind == b"IEND":
            break
        at += 12 + length
    return exif


def _eight_bit(samples: np.ndarray, top: float) -> np.ndarray:
    """``samples`` read against ``top`` as white, rounded to 8 bits (brighter ones clipped)."""
    return np.clip(np.rint(samples * (255.0 / top)), 0, 255).astype(np.uint8)


def _finite(image: Image.Image) -> np.ndarray:
    """A single-channel image's samples as floats, NaN and infinities read as 0."""
    return np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)


def _to_rgb(image: Image.Image, white: int | None = None, wide: np.ndarray | None = None) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; high bit depths and floats are rescaled against ``white`` (by default the
    file's full range, 65,535 for 16-bit samples; a float image's own largest value, or 1) rather than clipped.
    ``wide``: a 16-bit colour image's own samples (:func:`_wide_samples`) in place of Pillow's 8-bit reading."""
    if wide is not None:
        eight = _eight_bit(wide, float(white or 65535))
        return Image.fromarray(eight[..., 0] if eight.shape[2] == 1 else eight).convert("RGB")
    if image.mode == "RGB":
        return image
    if image.mode in (*_HIGH_BIT, "F"):
        array = _finite(image)
        top = 65535.0 if image.mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        if white is not None:
            top = float(white)
        elif image.mode == "F":
            top = max(float(array.max(initial=0)), 1.0)
        return Image.fromarray(_eight_bit(array, top), mode="L").convert("RGB")
    if image.mode in ("P", "PA", "LA", "RGBa", "La"):
        image = image.convert("RGBA")
    return image.convert("RGB")


def original_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of an image as it was sent, upright: a JPEG decoded at a reduced scale (:func:`open_image`'s
    ``least``) is smaller than that, and every geometry (the view, where a patch lies, what the log records) is the
    original's."""
    return image.info.get(ORIGINAL_SIZE, image.size)


def open_image(
    source: str | Path | bytes,
    name: str | None = None,
    max_pixels: int | None = None,
    accept: Callable[[int, int], object] | None = None,
    white_level: int | None = None,
    least: Callable[[int, int], tuple[int, int]] | None = None,
) -> Image.Image:
    """Decode ``source`` (a path or the bytes of an upload) into an RGB image, turned upright by its EXIF
    orientation (as a phone or camera meant it).

    Only PNG, JPEG, BMP and TIFF decoders are used (Pillow knows dozens, each one more surface for a crafted file).
    ``max_pixels`` is checked from the header, before the pixels are decoded, so a decompression bomb costs nothing
    (Pillow's own bomb check, which may answer first, is reported the same way); so is ``accept(width, height)``,
    which raises for a shape the caller cannot use (see :meth:`Preprocess.view`). Animated and multi-page images
    are refused: which frame shows the part is not ours to guess. ``white_level``: the category's (see
    :func:`white_level`; :attr:`Preprocess.white_level`) for samples of more than 8 bits. ``least(width, height)``:
    the smallest (width, height) of the upright image the caller needs (:meth:`Preprocess.least`); a JPEG is then
    decoded by libjpeg at the smallest of its DCT scales (1/2, 1/4, 1/8) that still holds it, and
    :func:`original_size` tells the size it was sent at.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "upload")
    if isinstance(source, bytes):
        if not source:
            raise ImageError(f"{label}: the file is empty")
        stream: io.BytesIO | Path = io.BytesIO(source)
    else:
        stream = Path(source)
        if not stream.is_file():
            raise ImageError(f"{label}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream, formats=FORMATS)
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageTooLargeError(
                    f"{label}: {width}x{height} = {width * height} pixels, more than the limit of {max_pixels}"
                )
            if getattr(image, "is_animated", False):
                raise ImageError(f"{label}: an animated or multi-page image; send a single still frame")
            if accept is not None:
                accept(width, height)
            if least is not None and image.format == "JPEG":
                turned = image.getexif().get(ORIENTATION, 1) in TURNED  # the JPEG's header holds its EXIF
                need = least(height, width) if turned else least(width, height)
                image.draft(None, (need[1], need[0]) if turned else need)
            channels = _wide_channels(image)
            plain = not channels and _plain_colour(image)
            wide = None
            if channels or plain:  # decoded as stored by imagecodecs, turned below (Pillow turns a TIFF as it decodes)
                data = source if isinstance(source, bytes) else Path(source).read_bytes()
                exif = _png_exif(data) if image.format == "PNG" else image.getexif()
                if channels:
                    wide = _wide_samples(data, image, channels, label)
                else:
                    samples = _samples(imagecodecs.spng_decode, data, image, 3, label)
                    image.close()
                    image = Image.fromarray(np.ascontiguousarray(samples))
            else:
                image.load()
                exif = image.getexif()
            orientation = exif.get(ORIENTATION, 1)
            image = _to_rgb(image, white_level, wide)
            if orientation != 1:
                image.getexif()[ORIENTATION] = orientation
                image = ImageOps.exif_transpose(image)
            image.info[ORIGINAL_SIZE] = (height, width) if orientation in TURNED else (width, height)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"{label}: more pixels than the decoder accepts ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"{label}: not a recognised image (PNG, JPEG, BMP or TIFF expected)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{label}: cannot decode the image ({exc})") from exc
    return image


def format_suffix(data: bytes) -> str:
    """The suffix a file of these bytes needs for a fit to read it, from the image's header: its format's, whatever
    the file was called when it was sent."""
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            return _SUFFIXES[image.format]
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"not a recognised image (PNG, JPEG, BMP or TIFF expected): {exc}") from exc


def header_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file from its header alone, before any EXIF rotation (which swaps the sides)."""
    try:
        with Image.open(path, formats=FORMATS) as image:
            return image.size
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{path}: not a recognised image (PNG, JPEG, BMP or TIFF expected): {exc}") from exc


def is_image_file(path: Path) -> bool:
    """An image by its suffix, and not hidden: macOS writes a ``._<name>`` resource fork beside every file it copies
    to a USB stick or a share, with the image's suffix and no image in it (hidden, as every dot-file, from ``ls``)."""
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def image_files_in(folder: Path) -> list[Path]:
    """The image files of a folder, sorted, so that fits and unions of masks are reproducible."""
    return sorted(p for p in folder.iterdir() if is_image_file(p))


MaskSource = Path | tuple[Path, ...]  # a mask file, a folder of masks, or the several files of one image's mask


def mask_parts(source: MaskSource) -> list[Path]:
    """The files of a ground-truth mask: the file itself, every image in a folder of masks (MVTec LOCO AD keeps
    one mask per defect region of an image in a folder named for it), or the files given (AITEX names an image's
    second mask ``<stem>_mask2`` beside its ``<stem>_mask1``)."""
    if isinstance(source, tuple):
        return list(source)
    if not source.is_dir():
        return [source]
    parts = image_files_in(source)
    if not parts:
        raise ImageError(f"{source}: a folder of masks without any image in it")
    return parts


def read_mask(source: MaskSource | BinaryIO) -> Image.Image:
    """A ground-truth mask as one 8-bit image, 255 where any of its files marks a defect (a pixel not zero in any
    channel: a 16-bit 1 or a dark blue stroke counts; a palette's colours, not its indices, are read) and 0 elsewhere;
    the files of one mask must share one size, which is then the mask's."""
    union: np.ndarray | None = None
    for part in mask_parts(source) if isinstance(source, Path | tuple) else [source]:
        with Image.open(part, formats=FORMATS) as image:
            channels = _wide_channels(image)
            if channels:  # a 16-bit colour 1 is a defect too
                array = _wide_samples(_read_all(part), image, channels, str(part))
            else:
                array = np.asarray(image if image.mode in _SINGLE_CHANNEL else image.convert("RGB"))
        marked = array.reshape(array.shape[0], array.shape[1], -1).any(axis=2)
        if union is not None and marked.shape != union.shape:
            raise ImageShapeError(
                f"{part}: the mask is {marked.shape[1]}x{marked.shape[0]}, the other files of the same mask "
                f"{union.shape[1]}x{union.shape[0]}"
            )
        union = marked if union is None else union | marked
    return Image.fromarray(union.astype(np.uint8) * 255, mode="L")


def _read_all(source: Path | BinaryIO) -> bytes:
    """Every byte of a file or of a stream, from its start."""
    if isinstance(source, Path):
        return source.read_bytes()
    source.seek(0)
    return source.read()


def mask_name(source: MaskSource) -> str:
    """A mask as its messages name it: its path, or its files' paths joined by ``+``."""
    return " + ".join(map(str, source)) if isinstance(source, tuple) else str(source)


def mask_size(source: MaskSource) -> tuple[int, int]:
    """(width, height) of a ground-truth mask from its headers; the files of one mask must agree."""
    sizes = {part: header_size(part) for part in mask_parts(source)}
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{part.name} {w}x{h}" for part, (w, h) in sizes.items())
        raise ImageShapeError(f"{mask_name(source)}: its masks differ in size ({listed})")
    return next(iter(sizes.values()))


def scaled_alike(mask: tuple[int, int], image: tuple[int, int]) -> bool:
    """Whether a mask of size ``mask`` (width, height) is its image's shape at another scale, to within one of the
    mask's pixels: a mask saved at half a camera's resolution says which pixels are defective as well as one at full
    resolution, so it is scaled to its image; a mask of another shape says nothing certain (which part of the image
    does it cover?) and is refused."""
    (mask_width, mask_height), (width, height) = mask, image
    return abs(mask_height - mask_width * height / width) <= 1 and abs(mask_width - mask_height * width / height) <= 1


def mask_png(source: MaskSource) -> bytes:
    """A ground-truth mask as the bytes of one PNG: a mask file's own bytes, a folder's or several files' masks
    united."""
    if isinstance(source, Path) and not source.is_dir():
        return source.read_bytes()
    buffer = io.BytesIO()
    read_mask(source).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    """A small JPEG of an RGB image, for people to look at (bottle's 224x224 views: 8.9-9.8 KB)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@dataclass(frozen=True)
class View:
    """Where the model's view of one image lies: the image is resized to ``resized`` (width, height), then the view
    is the ``width`` x ``height`` window at (``left``, ``top``) of it (the whole of it in the ``whole`` field of
    view). View pixel (x, y) is original pixel ((x + left) / scale_x, (y + top) / scale_y)."""

    width: int
    height: int
    resized: tuple[int, int]
    left: int
    top: int
    scale_x: float
    scale_y: float

    def to_original(self, x: float, y: float) -> tuple[float, float]:
        return (x + self.left) / self.scale_x, (y + self.top) / self.scale_y


@dataclass(frozen=True)
class Preprocess:
    """The field of view of a category.

    ``whole`` (the default for new fits): the whole image, aspect ratio kept, resized so that it holds about
    ``pixels`` pixels, each side a multiple of 16: a 452x184 strip becomes 352x144 at 224x224's budget, a 44x18 patch
    grid; nothing is cut away. ``crop``: the shorter side resized to ``resize``, then the centre ``crop`` x ``crop``
    square (the paper's and anomalib's geometry; a strip keeps only its middle). An image more elongated than
    ``MAX_ASPECT`` (64:1 whole, 16:1 crop) is refused before any pixel is resized: its resize would cost out of all
    proportion (a 10000x2 PNG of a few hundred bytes needed a 1,280,000 x 256 resize in the crop geometry)."""

    field_of_view: str = "whole"
    resize: int = 256
    crop: int = 224
    pixels: int = 224 * 224
    white_level: int | None = None  # grayscale samples of more than 8 bits: the one read as white (open_image)
    jpeg_scaling: bool = True  # JPEGs decoded at a reduced DCT scale (:meth:`least`); off for versions fitted before

    def __post_init__(self) -> None:
        if self.white_level is not None and not 1 <= self.white_level <= MAX_WHITE_LEVEL:
            raise ValueError(f"a white level must be between 1 and {MAX_WHITE_LEVEL}, got {self.white_level}")
        if self.field_of_view not in FIELDS_OF_VIEW:
            raise ValueError(f"field of view must be one of {FIELDS_OF_VIEW}, got {self.field_of_view!r}")
        if self.crop > self.resize:
            raise ValueError(f"crop {self.crop} is larger than resize {self.resize}")
        if self.pixels < MIN_SIDE * MIN_SIDE:
            raise ValueError(f"a field of view of {self.pixels} pixels is too small; at least {MIN_SIDE**2}")

    def view(self, width: int, height: int) -> View:
        """The view of a ``width`` x ``height`` image; refuses extreme aspect ratios (``ImageShapeError``)."""
        if width < 1 or height < 1:
            raise ImageShapeError(f"a {width}x{height} image has no pixels to inspect")
        aspect, limit = max(width, height) / min(width, height), MAX_ASPECT[self.field_of_view]
        if aspect > limit:
            raise ImageShapeError(
                f"a {width}x{height} image has an aspect ratio of {aspect:.0f}:1; at most {limit:.0f}:1 is inspected "
                f"in the {self.field_of_view} field of view (cut long parts into pieces of at most that ratio)"
            )
        if self.field_of_view == "crop":
            scale = self.resize / min(width, height)
            size = (max(self.crop, round(width * scale)), max(self.crop, round(height * scale)))
            left, top = (size[0] - self.crop) // 2, (size[1] - self.crop) // 2
            return View(self.crop, self.crop, size, left, top, size[0] / width, size[1] / height)
        scale = (self.pixels / (width * height)) ** 0.5
        size = tuple(max(MIN_SIDE, round(side * scale / ALIGN) * ALIGN) for side in (width, height))
        return View(size[0], size[1], size, 0, 0, size[0] / width, size[1] / height)

    def least(self, width: int, height: int) -> tuple[int, int]:
        """The smallest decode of a ``width`` x ``height`` image that makes this view as a full decode does, near
        enough: twice the resized view on each side, so that the resize's own filter still does most of the
        shrinking (bottle as JPEGs, at 1/2 and at 1/8: image and pixel AUROC as decoded in full to 3 digits, PRO
        within 0.005 either way, docs/views.md); the whole image where the category decodes JPEGs in full
        (:attr:`jpeg_scaling`)."""
        if not self.jpeg_scaling:
            return width, height
        resized = self.view(width, height).resized
        return min(width, 2 * resized[0]), min(height, 2 * resized[1])

    def decode(self, source: str | Path | bytes, name: str | None = None, max_pixels: int | None = None) -> Image.Image:
        """``source`` decoded for this view (:func:`open_image`): its shape checked from the header, samples of more
        than 8 bits read against the white level, a JPEG at the smallest scale that still holds :meth:`least`. Every
        image a category's model sees is decoded here, in its fit and in its queries alike."""
        return open_image(source, name, max_pixels, self.view, self.white_level, self.least)

    def _apply(self, image: Image.Image, resample: Image.Resampling) -> Image.Image:
        view = self.view(*original_size(image))
        image = image.resize(view.resized, resample, reducing_gap=None)
        if view.resized == (view.width, view.height):
            return image
        return image.crop((view.left, view.top, view.left + view.width, view.top + view.height))

    def cropped(self, image: Image.Image) -> Image.Image:
        """The RGB view the model sees, for drawing heatmaps over."""
        return self._apply(image, Image.BILINEAR)

    def tensor(self, image: Image.Image) -> torch.Tensor:
        """The normalised (3, height, width) float tensor of the view, fed to the backbone."""
        return self.normalised(self.cropped(image))

    @staticmethod
    def normalised(view: Image.Image) -> torch.Tensor:
        """The backbone's tensor of a view already made by :meth:`cropped`."""
        array = np.asarray(view, dtype=np.float32) / 255.0
        tensor = torch.from_numpy(array).permute(2, 0, 1)
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        return (tensor - mean) / std

    def mask(self, source: MaskSource | BinaryIO | None, size: tuple[int, int]) -> np.ndarray:
        """A ground-truth mask (a file, a stream, a folder of masks or several files, read by :func:`read_mask`) of
        an image of ``size`` (width, height) in the view's geometry; none: all normal. A mask of another size than
        its image is scaled to it where it has the image's shape (:func:`scaled_alike`), else refused
        (``ImageShapeError``). Every pixel that is not zero is defective, as anomalib reads VisA: masks come
        as 0/255, 0/1, label numbers or coloured strokes on black, and a cut at mid-grey would read the last three
        as all normal."""
        if source is None:
            view = self.view(*size)
            return np.zeros((view.height, view.width), dtype=bool)
        mask = read_mask(source)
        if mask.size != tuple(size):
            if not scaled_alike(mask.size, size):
                raise ImageShapeError(
                    f"the mask is {mask.size[0]}x{mask.size[1]}, its image {size[0]}x{size[1]}: not the image's "
                    "shape at any scale"
                )
            mask = mask.resize(tuple(size), Image.NEAREST)
        return np.asarray(self._apply(mask, Image.NEAREST)) > 0

    @property
    def whole(self) -> Preprocess:
        """The whole field of view at the same pixel budget: the common geometry in which every field of view's
        anomaly map is compared over the whole image."""
        return replace(self, field_of_view="whole")

    def whole_image_map(self, view_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """``view_map`` of an image of ``size`` (width, height) placed in :attr:`whole`'s geometry: identical for
        the whole field of view; a crop's map is resized into the crop's place, zero (normal) around it."""
        if self.field_of_view == "whole":
            return view_map
        view, target = self.view(*size), self.whole.view(*size)
        x0, y0 = view.to_original(0, 0)
        x1, y1 = view.to_original(view.width, view.height)
        left, top = round(x0 * target.scale_x), round(y0 * target.scale_y)
        right = max(left + 1, round(x1 * target.scale_x))
        bottom = max(top + 1, round(y1 * target.scale_y))
        placed = torch.nn.functional.interpolate(
            torch.from_numpy(np.ascontiguousarray(view_map, dtype=np.float32))[None, None],
            size=(bottom - top, right - left),
            mode="bilinear",
            align_corners=False,
        )[0, 0].numpy()
        whole = np.zeros((target.height, target.width), dtype=np.float32)
        whole[top:bottom, left:right] = placed[: target.height - top, : target.width - left]
        return whole
