"""The field of view: what part of an image the model sees, at what size, and where each of its pixels lies in the
original; every image a category's model sees, in its fit and in its queries, is decoded and resized here."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageChops

from patchcore.errors import ImageShapeError
from patchcore.images import MAX_WHITE_LEVEL, SINGLE_CHANNEL, open_image, original_mode, original_size
from patchcore.masks import MaskSource, read_mask, scaled_alike

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FIELDS_OF_VIEW = ("whole", "crop")
ALIGN = 16  # view sides are multiples of the deepest used stride (layer3: 16), so every layer's grid is exact
MIN_SIDE = 32
# The most elongated image inspected, per field of view. crop: its resize before the centre square is cut grows with
# the aspect ratio (4096x256 at 16:1). whole: the view keeps about the pixel budget until its short side reaches
# MIN_SIDE (at 224x224's budget near 49:1), then grows with the ratio; 64:1 bounds it at 1792x32, 1.14x that budget,
# which holds thin real parts (a rail's 55x1250 photographs, 23:1; line-scan strips) whole.
MAX_ASPECT = {"whole": 64.0, "crop": 16.0}


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

    @property
    def enlargement(self) -> float:
        """How many times the image is magnified to make the view (below 1: reduced), by area: a view enlarged from
        fewer pixels than it holds shows detail the image never had, as blur."""
        return (self.scale_x * self.scale_y) ** 0.5


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

    def footprint(self, width: int, height: int, stride: int) -> tuple[float, float]:
        """How many of a ``width`` x ``height`` image's own pixels (across, down) one patch of its view spans, for a
        patch grid of ``stride`` view pixels: the finest detail the view resolves. A defect much smaller than that
        changes its patch's features little, whatever the memory bank holds, so this is what says whether a larger
        ``pixels`` (or tiles) is worth its cost for a product's defects."""
        view = self.view(width, height)
        return stride / view.scale_x, stride / view.scale_y

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


def most_enlarged(preprocess: Preprocess, sizes: Iterable[tuple[int, int]]) -> float | None:
    """The most any image of these (width, height) sizes is enlarged to its view (None: no size)."""
    return max((preprocess.view(*size).enlargement for size in sizes), default=None)


def size_notes(view: View, size: tuple[int, int], seen: float | None) -> list[str]:
    """A note for an image enlarged to its ``view`` more than any good image was (``seen``: the most a good image of
    the category was enlarged), and enlarged at all, so that its view shows blur the camera's images do not: it lies
    outside the scales the model learnt good parts at, and its score reflects its size as well as the part (a 40x40
    thumbnail of a good bottle scores 2.5, twice the threshold). Relative to the good images' own sizes, not a fixed
    size: a set whose good images are small and enlarged (magnetic tiles) gets no note for images like them."""
    enlarged = view.enlargement
    if enlarged <= 1 or seen is None or enlarged <= seen:
        return []
    good = "reduced to it" if seen <= 1 else f"enlarged at most {seen:.2f} times"
    return [
        f"the image is {size[0]}x{size[1]} pixels, enlarged {enlarged:.2f} times to the model's {view.width}x"
        f"{view.height} view, where the category's good images were {good}: an enlarged image looks blurred to the "
        "model, so its score reflects its size as well as the part; send the camera's full image"
    ]


# Pillow's modes of one channel, alone or with alpha: a file of them holds no colour, whatever camera or tool wrote it
GREY_MODES = frozenset({*SINGLE_CHANNEL, "LA", "La"})


def is_grey(view: Image.Image) -> bool:
    """Whether an RGB picture has no colour at all: in every pixel its three channels are equal. A grey picture's view
    is grey too (resizing and cropping treat the three channels alike); a colour picture's is where its colour is
    fainter than the view's rounding (a single tinted pixel averaged into its neighbours)."""
    red, green, blue = view.split()
    return ImageChops.difference(red, green).getbbox() is None and ImageChops.difference(green, blue).getbbox() is None


def colouring(image: Image.Image, view: Image.Image) -> str:
    """``grey`` for a file of one channel (a grey camera's, or a picture made grey), ``colour`` for a file of colour
    channels whose ``view`` differs between them anywhere, ``neutral`` for a colour file without colour. Neutral says
    nothing of the source: a grey picture kept as a colour file decodes so, and so does a colour camera's JPEG of a
    grey part, its faint chroma rounded away (noise of one level in each channel, at JPEG quality 75, on a grey
    bottle's and a screw's pictures), so no note rests on it."""
    if original_mode(image) in GREY_MODES:
        return "grey"
    return "neutral" if is_grey(view) else "colour"


def colour_notes(colour: str, good: set[str | None]) -> list[str]:
    """A note for a grey file of a category whose good images all have colour, or a colour image of a category whose
    good images are all grey files (``colour``, ``good``: :func:`colouring` of the image and of each good image; None
    where a fit from before migration 0028 did not say): the model compares it with parts it never saw without (or
    with) colour, so its score reflects the camera as well as the part (a grey copy of a good bottle scores 1.75
    against a threshold of 1.31). A camera's file, not a rounding, decides: a neutral image on either side never
    makes a note, nor does a category of both."""
    if colour == "grey" and good == {"colour"}:
        return [
            "the image is grey (a file of one channel), where every good image of the category has colour: the model "
            "compares it with colour parts, so its score reflects the missing colour as well as the part; send the "
            "camera's own colour image"
        ]
    if colour == "colour" and good == {"grey"}:
        return [
            "the image has colour, where every good image of the category is grey (files of one channel): the model "
            "compares it with grey parts, so its score reflects the colour as well as the part; send the grey "
            "camera's own image"
        ]
    return []
