"""What the inspection log keeps of one answered query: the facts of the file, the verdict, its patch distances, the
timings, and the image as the settings say (nothing, a thumbnail, or the file itself)."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from patchcore.images import original_size, reduced
from store.inspections import Inspection

THUMBNAIL = 256
NAME_KEPT = 1000  # characters of an upload's file name the log keeps
# (offset, bytes there, format) of each accepted format's header; a WebP is a RIFF file whose form type says WEBP;
# Netpbm's P1-P6 (PBM, PGM, PPM, plain or binary) and Pf (a gray PFM: floats)
_MAGIC = ((0, b"\x89PNG", "PNG"), (0, b"\xff\xd8", "JPEG"), (0, b"BM", "BMP"), (0, b"II*\x00", "TIFF"),
          (0, b"MM\x00*", "TIFF"), (8, b"WEBP", "WEBP"),
          *((0, b"P" + kind, "PNM") for kind in (b"1", b"2", b"3", b"4", b"5", b"6", b"f")))  # fmt: skip
_MEDIA = {"PNG": "image/png", "JPEG": "image/jpeg", "BMP": "image/bmp", "TIFF": "image/tiff", "WEBP": "image/webp",
          "PNM": "image/x-portable-anymap"}  # fmt: skip


def file_format(data: bytes) -> str:
    """The format of an accepted upload, from its first bytes (the decoder has already checked it is one)."""
    return next((name for offset, magic, name in _MAGIC if data.startswith(magic, offset)), "unknown")


def kept_image(data: bytes, image: Image.Image, kind: str) -> tuple[bytes | None, str | None]:
    """(bytes, media type) of what the log keeps: ``full`` the file itself, ``thumbnail`` a JPEG at most 256 px on
    its longer side (bottle's 900 px images: 225 px, about 8 KB), ``none`` nothing."""
    if kind == "full":
        return data, _MEDIA.get(file_format(data), "application/octet-stream")
    if kind == "thumbnail":
        small = reduced(image, THUMBNAIL)
        buffer = io.BytesIO()
        small.save(buffer, format="JPEG", quality=85)
        return buffer.getvalue(), "image/jpeg"
    return None, None


@dataclass
class Received:
    """What the log keeps of an upload, taken as it is decoded (its hash, format and size as sent, and the image as
    the settings say), so that nothing needs the decoded image afterwards: a batch's images are let go as each is
    decoded."""

    sha256: str
    bytes: int
    format: str
    width: int
    height: int
    kind: str
    image: bytes | None
    media_type: str | None
    file_name: str | None


def received(data: bytes, image: Image.Image, kind: str, file_name: str | None) -> Received:
    """The facts of ``data``, decoded as ``image``; ``file_name`` as the caller sent it."""
    kept, media = kept_image(data, image, kind)
    width, height = original_size(image)  # as sent: a JPEG may have been decoded smaller
    return Received(hashlib.sha256(data).hexdigest(), len(data), file_format(data), width, height, kind, kept, media,
                    _printable(file_name))  # fmt: skip


def entry(
    request_id: str,
    category: str,
    model_id: int,
    is_anomalous: bool,
    score: float,
    threshold: float,
    defect_type: str | None,
    upload: Received,
    api_key: str | None,
    timings_ms: dict[str, float],
    regions: list[dict],
    part: str | None,
    p_value: float | None = None,
    patch_scores: np.ndarray | None = None,
    notes: list[str] | None = None,
) -> Inspection:
    """The record of one answered query; ``regions``: its defect regions as the answer gives them; ``part`` as the
    caller sent it; ``p_value`` and ``notes`` as the answer gives them; ``patch_scores`` its (rows, columns) patch
    distances, from which the log draws the heatmap the answer saw."""
    stages = {k: round(v, 3) for k, v in timings_ms.items() if k != "total"}
    return Inspection(
        request_id=request_id, category=category, model_id=model_id, is_anomalous=is_anomalous, score=score,
        threshold=threshold, defect_type=defect_type, sha256=upload.sha256, bytes=upload.bytes, format=upload.format,
        width=upload.width, height=upload.height, api_key=api_key, latency_ms=timings_ms.get("total", 0.0),
        stages_ms=stages, image_kind=upload.kind, image=upload.image, image_media_type=upload.media_type,
        regions=regions, part=part, file_name=upload.file_name, p_value=p_value,
        patch_scores=patch_scores, notes=notes,
    )  # fmt: skip


def _printable(name: str | None) -> str | None:
    """The file name as a text column holds it: PostgreSQL refuses a NUL in text, which would lose the whole record,
    so NULs read as U+FFFD; past ``NAME_KEPT`` characters (a name is a header, not a payload) the rest is cut."""
    return None if not name else name[:NAME_KEPT].replace("\x00", "\ufffd")
