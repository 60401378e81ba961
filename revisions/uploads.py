"""Images that teach a category (added normals, defect examples), decoded and embedded as the category's queries are.

They go through the same checks as ``/query`` (formats, pixel budget, shape). Like queries, they may have any size
and aspect ratio: the field of view brings each to the category's pixel budget (or crop), so their patches are of
the scale of the memory bank's whatever the image's shape.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from patchcore.images import format_suffix, jpeg, original_size
from patchcore.model import Embedder, ImageRecord
from patchcore.views import colouring


@dataclass(frozen=True)
class Upload:
    """One file that teaches: its name, bytes, and where it came from (a path, or who uploaded it)."""

    name: str
    data: bytes
    source: str


@dataclass
class Embedded:
    """An upload decoded and embedded: (H, W, D) features and its image record (split ``added``)."""

    upload: Upload
    image: Image.Image
    features: torch.Tensor
    record: ImageRecord


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def original_name(upload: Upload, image_id: int) -> str:
    """The file name an added image's original takes among a refit's training images: unique (its image id), still
    recognisable (its own name's stem) and with its format's suffix (an inspection's image is named without one)."""
    return f"added-{image_id}-{Path(upload.name).stem}{format_suffix(upload.data)}"


def embed(embedder: Embedder, upload: Upload, max_pixels: int | None) -> Embedded:
    """Decode and embed one upload as the category's queries are."""
    preprocess = embedder.preprocess
    image = preprocess.decode(upload.data, upload.name, max_pixels)
    view = preprocess.cropped(image)
    with torch.inference_mode():
        features = embedder.features(preprocess.normalised(view)[None])[0]
    record = ImageRecord(
        upload.name, "added", sha256(upload.data), *original_size(image), None, jpeg(view), view.size,
        colour=colouring(image, view),
    )  # fmt: skip
    return Embedded(upload, image, features, record)
