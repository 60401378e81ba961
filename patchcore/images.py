"""Reading images of any common mode into 8-bit RGB, as a category's model sees every one of them.

Factories use 8-bit RGB, 16-bit grayscale TIFFs, palette PNGs and RGBA screenshots alike; every one of them is
turned into 8-bit RGB here so the backbone always sees the distribution it was trained on. An image of more than 8
bits per sample (grayscale, float, or 16-bit colour) is read against its category's white level (:func:`white_level`):
a 12-bit camera's samples saved in a 16-bit file use a sixteenth of the file's range, and read against 65,535 they
would reach the network nearly black, in 16 grey levels. Pillow itself cuts 16-bit colour to the high byte of each
sample, so a 16-bit colour PNG or TIFF is decoded again by imagecodecs (libpng, libtiff) for its full samples. An
8-bit colour PNG is decoded by libspng (imagecodecs): the same samples as Pillow's (PNG is lossless) in about 2/3 of
the time, and decoding is most of what a query's decode stage costs (gray PNGs take Pillow as long). What part of
an image the model sees, and at what size: :mod:`patchcore.views`; ground-truth masks: :mod:`patchcore.masks`.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import imagecodecs
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from patchcore.errors import ImageError, ImageShapeError, ImageTooLargeError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".pnm", ".pfm")
# Pillow's "PPM" reads Netpbm's PGM, PPM and PBM, as machine-vision libraries write them, and gray PFM (floats)
FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "PPM")
KINDS = "PNG, JPEG, BMP, TIFF, WebP or Netpbm (PGM, PPM, PBM)"  # what FORMATS are called in messages
_SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp", "PPM": ".pnm"}
# pictures of a kind not read here: in a folder of images they are refused by name, never passed over unsaid
UNREAD_SUFFIXES = (".gif", ".heic", ".heif", ".avif", ".jp2", ".j2k", ".jpx", ".jxl", ".pam", ".exr", ".dng", ".psd",
                   ".ico")  # fmt: skip
ORIENTATION = 0x0112  # the EXIF tag
TURNED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
ORIGINAL_SIZE = "patchcore.original_size"  # image.info: (width, height) as sent, upright, when decoded smaller
ORIGINAL_MODE = "patchcore.original_mode"  # image.info: the file's own Pillow mode (L, I;16, RGB, ...)
SINGLE_CHANNEL = ("1", "L", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # read as they are: a 16-bit 1 is a defect
_HIGH_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # integer samples of more than 8 bits
_WIDE = {"RGB": 3, "RGBA": 3, "LA": 1}  # a PNG's 16-bit samples Pillow cuts to 8 bits, by raw mode: colour channels
_PLAIN = ("RGB", "RGBA")  # 8-bit colour PNGs' raw modes: libspng decodes them in about 2/3 of Pillow's time
_BITS_PER_SAMPLE, _PHOTOMETRIC, _PLANAR_CONFIGURATION, _SAMPLE_FORMAT = 258, 262, 284, 339  # TIFF tags
_RGB, _SEPARATE_PLANES = 2, 2  # their values for RGB samples, and for one plane per colour
_WIDE_DECODERS = {"PNG": imagecodecs.png_decode, "TIFF": imagecodecs.tiff_decode}
MAX_WHITE_LEVEL = 2**31 - 1


def white_level(paths: Iterable[Path | bytes]) -> int | None:
    """The sample value that reads as white in a category's images of more than 8 bits per sample: ``2**k - 1`` for
    the fewest bits ``k`` (at least 8) that hold the brightest sample of any of ``paths``; None when none of them has
    more than 8 bits (they are read as they are). Float images count by their brightest value rounded up, unless
    they lie within 0 to 1, which is read against 1 as before. A sensor's bit depth is a property of the camera,
    not of one picture, so it is fixed for the category at its fit and every query is read against it: a 12-bit
    camera's images, saved in 16-bit files, read as 12-bit (white 4,095) whatever one of them holds, and a bright
    defect shows as bright, where scaling each image by its own brightest pixel would hide it. Only high-bit and
    float images are decoded; the others are told by their header. A file's bytes (an upload) count as its path."""
    brightest: int | None = None
    for path in paths:
        label = "upload" if isinstance(path, bytes) else str(path)
        try:
            with Image.open(io.BytesIO(path) if isinstance(path, bytes) else path, formats=FORMATS) as image:
                channels = wide_channels(image)
                if channels:
                    data = path if isinstance(path, bytes) else path.read_bytes()
                    top = float(wide_samples(data, image, channels, label).max(initial=0))
                elif image.mode not in (*_HIGH_BIT, "F"):
                    continue
                else:
                    top = float(_finite(image).max(initial=0))
                    if image.mode == "F" and top <= 1.0:  # floats from 0 to 1: read against 1, as they are meant
                        continue
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
            raise ImageError(f"{label}: cannot read the image ({exc})") from exc
        brightest = max(brightest or 0, math.ceil(top))
    return None if brightest is None else min((1 << max(8, brightest.bit_length())) - 1, MAX_WHITE_LEVEL)


def wide_channels(image: Image.Image) -> int:
    """How many colour channels of a 16-bit colour (or gray and alpha) PNG, TIFF or binary PPM to read, from its
    header, before it is decoded: Pillow reduces such samples to their high byte (a PPM's by its maxval), so a 12-bit
    camera's LSB-aligned colour would read as 0-15 (and a TIFF's separate colour planes of 16 bits as if they had 8).
    0 for every other image."""
    if image.format == "TIFF":
        tags = image.tag_v2
        sample_format = tags.get(_SAMPLE_FORMAT, 1)
        unsigned = (sample_format[0] if isinstance(sample_format, tuple) else sample_format) == 1
        bits = tags.get(_BITS_PER_SAMPLE, (8,))
        wide = max(bits) if isinstance(bits, tuple) else bits
        return 3 if tags.get(_PHOTOMETRIC) == _RGB and unsigned and 8 < wide <= 16 else 0
    if image.format == "PPM":
        return 3 if image.mode == "RGB" and _raw_netpbm_maxval(image) > 255 else 0
    base, bits = _png_raw_mode(image)
    return _WIDE.get(base, 0) if bits.startswith("16") else 0


def _raw_netpbm_maxval(image: Image.Image) -> int:
    """A binary Netpbm file's maxval (its white) where Pillow scales its samples by it, as read from its header; 0
    where Pillow reads them as they are (maxval 255) and for a plain (text) file."""
    tile = image.tile[0] if image.tile else None
    return tile.args[1] if tile is not None and tile.codec_name == "ppm" else 0


def _netpbm_decoder(image: Image.Image) -> Callable[[bytes], np.ndarray]:
    """A decoder of a binary 16-bit PPM's samples (big-endian, after the header), scaled as Pillow scales a 16-bit
    PGM's, its maxval to 65,535: Pillow would cut a colour PPM's to 8 bits by the maxval, so a 12-bit camera's
    samples in a file of maxval 65,535 would reach the network 16 times too dark, where its PGM is read against the
    category's white level."""
    offset, maxval, (width, height) = image.tile[0].offset, _raw_netpbm_maxval(image), image.size

    def decode(data: bytes) -> np.ndarray:
        samples = np.frombuffer(data, ">u2", count=width * height * 3, offset=offset)
        return samples.reshape(height, width, 3) * np.float32(65535 / maxval)

    return decode


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


def wide_samples(data: bytes, image: Image.Image, channels: int, label: str) -> np.ndarray:
    """(height, width, channels) float samples of ``image``, a 16-bit PNG or TIFF (its bytes ``data``), decoded in
    full by imagecodecs, alpha dropped."""
    decode = _netpbm_decoder(image) if image.format == "PPM" else _WIDE_DECODERS[image.format]
    return _samples(decode, data, image, channels, label).astype(np.float32)  # exact below 2**24


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
    ``wide``: a 16-bit colour image's own samples (:func:`wide_samples`) in place of Pillow's 8-bit reading."""
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


def original_mode(image: Image.Image) -> str:
    """The Pillow mode of the file an image was decoded from (``L``, ``I;16``, ``RGB``...), before it was made RGB."""
    return image.info.get(ORIGINAL_MODE, image.mode)


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

    Only the decoders of :data:`FORMATS` are used (Pillow knows dozens, each one more surface for a crafted file).
    ``max_pixels`` is checked from the header, before the pixels are decoded, so a decompression bomb costs nothing
    (Pillow's own bomb check, which may answer first, is reported the same way); so is ``accept(width, height)``,
    which raises for a shape the caller cannot use (see :meth:`patchcore.views.Preprocess.view`). Animated and
    multi-page images are refused: which frame shows the part is not ours to guess. ``white_level``: the category's
    (see :func:`white_level`; :attr:`patchcore.views.Preprocess.white_level`) for samples of more than 8 bits.
    ``least(width, height)``: the smallest (width, height) of the upright image the caller needs
    (:meth:`patchcore.views.Preprocess.least`); a JPEG is then decoded by libjpeg at the smallest of its DCT scales
    (1/2, 1/4, 1/8) that still holds it, and
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
                try:
                    accept(width, height)
                except ImageShapeError as exc:  # named, as every error here is: an upload may be one of many
                    raise ImageShapeError(f"{label}: {exc}") from None
            if least is not None and image.format == "JPEG":
                turned = image.getexif().get(ORIENTATION, 1) in TURNED  # the JPEG's header holds its EXIF
                need = least(height, width) if turned else least(width, height)
                image.draft(None, (need[1], need[0]) if turned else need)
            mode = image.mode
            channels = wide_channels(image)
            plain = not channels and _plain_colour(image)
            wide = None
            if channels or plain:  # decoded as stored by imagecodecs, turned below (Pillow turns a TIFF as it decodes)
                data = source if isinstance(source, bytes) else Path(source).read_bytes()
                exif = _png_exif(data) if image.format == "PNG" else image.getexif()
                if channels:
                    wide = wide_samples(data, image, channels, label)
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
            image.info[ORIGINAL_MODE] = mode
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"{label}: more pixels than the decoder accepts ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"{label}: not a recognised image ({KINDS} expected)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{label}: cannot decode the image ({exc})") from exc
    return image


def format_suffix(data: bytes) -> str:
    """The suffix a file of these bytes needs for a fit to read it, from the image's header: its format's, whatever
    the file was called when it was sent."""
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            return ".pfm" if image.format == "PPM" and image.mode == "F" else _SUFFIXES[image.format]
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"not a recognised image ({KINDS} expected): {exc}") from exc


def header_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file from its header alone, before any EXIF rotation (which swaps the sides)."""
    try:
        with Image.open(path, formats=FORMATS) as image:
            return image.size
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{path}: not a recognised image ({KINDS} expected): {exc}") from exc


def upright_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file as :func:`open_image` turns it upright by its EXIF orientation, read without
    decoding its pixels (a PNG's ``eXIf`` chunk may follow them: its chunks' headers are walked to it)."""
    try:
        with Image.open(path, formats=FORMATS) as image:
            exif = _png_exif(path.read_bytes()) if image.format == "PNG" else image.getexif()
            width, height = image.size
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{path}: not a recognised image ({KINDS} expected): {exc}") from exc
    return (height, width) if exif.get(ORIENTATION, 1) in TURNED else (width, height)


MACOS_FORKS = "__MACOSX"  # the folder of resource forks that macOS's zips carry


def hidden(parts: Sequence[str]) -> bool:
    """Whether a path below a folder, by its parts, is hidden as ``ls`` and Finder hide it: a dot-file or a file in a
    dot-folder, or in the ``__MACOSX`` folder of resource forks that macOS's zips carry."""
    return any(part.startswith(".") for part in parts) or (len(parts) > 1 and parts[0] == MACOS_FORKS)


def hidden_folder(name: str) -> bool:
    """Whether a folder of that name, at the top of what is read, hides every file below it (see :func:`hidden`)."""
    return name.startswith(".") or name == MACOS_FORKS


def is_image_file(path: Path) -> bool:
    """An image by its suffix, and not hidden: macOS writes a ``._<name>`` resource fork beside every file it copies
    to a USB stick or a share, with the image's suffix and no image in it (hidden, as every dot-file, from ``ls``)."""
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def image_files_in(folder: Path) -> list[Path]:
    """The image files of a folder, sorted, so that fits and unions of masks are reproducible. Pictures of a kind not
    read here (GIF, HEIC, JPEG 2000...) are refused by name: passed over, a folder of good parts would be fitted
    without them and nobody told; other files (notes, label lists) are not pictures and stay out."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    refuse_unread(files, str(folder))
    return [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]


def refuse_unread(files: Iterable[Path], where: str) -> None:
    """Refuse ``files`` where some are pictures of a kind not read here, naming the first and how many."""
    unread = [p for p in files if p.suffix.lower() in UNREAD_SUFFIXES]
    if unread:
        raise ImageError(
            f"{where}: {len(unread)} of its files are pictures of a kind not read here (as {unread[0].name}); {KINDS} "
            "expected: "
            "convert them, or move them out"
        )


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    """A small JPEG of an RGB image, for people to look at (bottle's 224x224 views: 8.9-9.8 KB)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def reduced(image: Image.Image, side: int) -> Image.Image:
    """``image`` at most ``side`` pixels on its longer side, for people to look at: reduced by the smallest whole
    factor that does it (a box filter; 1 ms for bottle's 900 px images), so no sample is interpolated."""
    return image.reduce(max(1, -(-max(image.size) // side)))
