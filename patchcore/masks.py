"""Ground-truth masks as the public sets ship them: one file, a folder of files per image (MVTec LOCO AD), or
several files of one image (AITEX), in any mode a set uses, read as one defect mask in the image's own pixels."""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from patchcore.errors import ImageError, ImageShapeError
from patchcore.images import FORMATS, SINGLE_CHANNEL, header_size, image_files_in, wide_channels, wide_samples

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
    channel: a 16-bit 1 or a dark blue stroke counts; a palette's colours, not its indices, are read; in a JPEG or a
    lossy WebP, a pixel above half its brightest sample) and 0 elsewhere; the files of one mask must share one size,
    which is then the mask's."""
    union: np.ndarray | None = None
    for part in mask_parts(source) if isinstance(source, Path | tuple) else [source]:
        with Image.open(part, formats=FORMATS) as image:
            channels = wide_channels(image)
            if channels:  # a 16-bit colour 1 is a defect too
                array = wide_samples(_read_all(part), image, channels, str(part))
            else:
                array = np.asarray(image if image.mode in SINGLE_CHANNEL else image.convert("RGB"))
            lossy = image.format == "JPEG" or (image.format == "WEBP" and _lossy_webp(_read_all(part)))
        samples = array.reshape(array.shape[0], array.shape[1], -1)
        # a lossy codec blurs a mask's two levels around every edge (JPEG's ringing: 1s and 2s beside a 255 stroke;
        # a lossy WebP's alike), so such a mask marks what lies above half its brightest sample, the midpoint of the
        # levels it was saved with
        marked = (samples > samples.max() / 2).any(axis=2) if lossy else samples.any(axis=2)
        if union is not None and marked.shape != union.shape:
            raise ImageShapeError(
                f"{part}: the mask is {marked.shape[1]}x{marked.shape[0]}, the other files of the same mask "
                f"{union.shape[1]}x{union.shape[0]}"
            )
        union = marked if union is None else union | marked
    return Image.fromarray(union.astype(np.uint8) * 255, mode="L")


def _lossy_webp(data: bytes) -> bool:
    """Whether a WebP holds its picture in the lossy bitstream (a ``VP8 `` chunk) rather than the lossless one
    (``VP8L``): the RIFF chunks are walked from the first, since an extended file (``VP8X``) names neither first."""
    offset = 12
    while offset + 8 <= len(data):
        kind = data[offset : offset + 4]
        if kind in (b"VP8 ", b"VP8L"):
            return kind == b"VP8 "
        size = int.from_bytes(data[offset + 4 : offset + 8], "little")
        offset += 8 + size + (size & 1)
    return False


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
