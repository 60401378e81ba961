"""Reading images of any common mode into RGB, and the resize / centre-crop / normalise transform.

Factories use 8-bit RGB, 16-bit grayscale TIFFs, palette PNGs and RGBA screenshots alike; every one of them is
turned into 8-bit RGB here so the backbone always sees the distribution it was trained on.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from patchcore.errors import ImageError, ImageTooLargeError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; high bit depths are rescaled rather than clipped."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        if image.mode == "F":
            top = max(float(array.max(initial=0)), 1.0)
        gray = np.clip(array * (255.0 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if image.mode in ("P", "PA", "LA", "RGBa", "La"):
        image = image.convert("RGBA")
    return image.convert("RGB")


def open_image(source: str | Path | bytes, name: str | None = None, max_pixels: int | None = None) -> Image.Image:
    """Decode ``source`` (a path or the bytes of an upload) into an RGB image.

    ``max_pixels`` is checked from the header, before the pixels are decoded, so a decompression bomb costs nothing.
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
            image = Image.open(stream)
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageTooLargeError(
                    f"{label}: {width}x{height} = {width * height} pixels, more than the limit of {max_pixels}"
                )
            image.load()
    except ImageTooLargeError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageError(f"{label}: not a recognised image (PNG, JPEG, BMP or TIFF expected)") from exc
    except (
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        raise ImageError(f"{label}: cannot decode the image ({exc})") from exc
    return _to_rgb(image)


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side to ``resize`` then centre-crop ``crop``: the geometry masks and maps share."""

    resize: int = 256
    crop: int = 224

    def __post_init__(self) -> None:
        if self.crop > self.resize:
            raise ValueError(f"crop {self.crop} is larger than resize {self.resize}")

    def _geometry(self, image: Image.Image, resample: Image.Resampling) -> Image.Image:
        width, height = image.size
        scale = self.resize / min(width, height)
        size = (max(self.crop, round(width * scale)), max(self.crop, round(height * scale)))
        image = image.resize(size, resample, reducing_gap=None)
        left, top = (size[0] - self.crop) // 2, (size[1] - self.crop) // 2
        return image.crop((left, top, left + self.crop, top + self.crop))

    def cropped(self, image: Image.Image) -> Image.Image:
        """The RGB crop the model sees, for drawing heatmaps over."""
        return self._geometry(image, Image.BILINEAR)

    def tensor(self, image: Image.Image) -> torch.Tensor:
        """The normalised (3, crop, crop) float tensor fed to the backbone."""
        array = np.asarray(self.cropped(image), dtype=np.float32) / 255.0
        tensor = torch.from_numpy(array).permute(2, 0, 1)
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        return (tensor - mean) / std

    def mask(self, path: Path | None) -> np.ndarray:
        """A ground-truth mask in the same geometry as the anomaly map; no mask means all normal."""
        if path is None:
            return np.zeros((self.crop, self.crop), dtype=bool)
        mask = Image.open(path).convert("L")
        return np.asarray(self._geometry(mask, Image.NEAREST)) > 127
