"""The care area: the part of each picture that is the product, where a defect can be.

A camera sees more than the part: a fixture, a label, a conveyor belt, the tray's edge. Patches there vary from
picture to picture without being defects, and PatchCore flags whatever varies: a loose cable at the edge of the frame
makes a part anomalous, and a good picture with one raises the threshold for every part after it. A category may be
fitted with a care area, a mask over its pictures (non-black where the part is to be inspected, black where not):
the patch cells outside it are neither in the memory bank nor searched nor scored, so nothing there can make a part
anomalous, make a region, take a coreset row or raise a good score, hence the threshold.

The mask is stretched over each picture's whole view (the pictures of one camera share its framing), and a patch
cell is inspected where at least half of it lies in the area: the grid's nearest outline to the drawn one, neither
side favoured. A cell's features see beyond it (the backbone's receptive field), so a defect just outside the area
may still raise the cells beside it, as a defect on the part raises its neighbours.
"""

from __future__ import annotations

import functools
import io

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

INSPECTED = 0.5  # the share of a cell that must lie in the area for the cell to be inspected
MAX_PIXELS = 8192 * 8192  # the largest mask read (a 1-bit PNG of a few KB can claim billions of pixels)
KEPT_SIDE = 4096  # a larger mask is kept at this long side: at least 8 of its pixels a cell for the finest views


class CareArea:
    """A care area: ``mask`` (height, width), True where the part is inspected."""

    def __init__(self, mask: np.ndarray) -> None:
        if mask.ndim != 2 or not mask.any():
            raise ValueError("the care area marks nothing to inspect: draw the part in white (non-black) on black")
        self.mask = mask.astype(bool)
        self._cells: dict[tuple[int, int], torch.Tensor] = {}

    @classmethod
    def read(cls, data: bytes, name: str = "care area") -> CareArea:
        """The area of a mask image's bytes (any format Pillow reads; every non-black pixel is inspected), of at most
        :data:`MAX_PIXELS`, kept at a long side of at most :data:`KEPT_SIDE` (a cell inspected by half of it)."""
        too_large = f"{name}: a mask of more than {MAX_PIXELS:,} pixels: draw it at the pictures' size or smaller"
        try:
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise ValueError(f"{too_large} (it is {image.width}x{image.height}; it is stretched over them)")
                marked = image.convert("L").point(lambda v: 255 if v else 0)
        except Image.DecompressionBombError as exc:
            raise ValueError(f"{too_large} ({exc})") from exc
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"{name}: not an image Pillow can read ({exc})") from exc
        scale = KEPT_SIDE / max(marked.size)
        if scale < 1:
            kept = (max(1, round(marked.width * scale)), max(1, round(marked.height * scale)))
            marked = marked.resize(kept, Image.Resampling.BOX)
        return cls(np.asarray(marked) >= 128)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the mask as drawn."""
        return self.mask.shape[1], self.mask.shape[0]

    @property
    def share(self) -> float:
        """The share of the picture inspected."""
        return float(self.mask.mean())

    def png(self) -> bytes:
        """The mask as a 1-bit PNG: what the store keeps (a few KB)."""
        out = io.BytesIO()
        Image.fromarray(self.mask).save(out, format="PNG", optimize=True)
        return out.getvalue()

    def cells(self, height: int, width: int) -> torch.Tensor:
        """The flat indices of the inspected cells of a ``height`` x ``width`` patch grid, row by row: those with at
        least :data:`INSPECTED` of their area in the mask stretched over the grid (a box filter's average)."""
        key = (height, width)
        if key not in self._cells:  # a float copy of the mask (mode F, so the resize averages), made once a grid shape
            share = np.asarray(Image.fromarray(self.mask.astype(np.float32)).resize((width, height), Image.BOX))
            inspected = np.flatnonzero(share >= INSPECTED)
            if inspected.size == 0:
                raise ValueError(
                    f"the care area ({self.share:.1%} of the picture) covers no patch cell of a {width}x{height} "
                    f"grid by half: draw it larger, or fit a finer view (--pixels)"
                )
            self._cells[key] = torch.from_numpy(inspected)
        return self._cells[key]

    def cell_grid(self, height: int, width: int) -> np.ndarray:
        """(height, width) bool: the cells :meth:`cells` inspects, as the grid holds them."""
        grid = np.zeros(height * width, dtype=bool)
        grid[self.cells(height, width).numpy()] = True
        return grid.reshape(height, width)

    def over(self, height: int, width: int) -> np.ndarray:
        """The mask stretched over a ``height`` x ``width`` array of the picture's pixels (its view's, say), True
        where inspected: what the user drew, pixel by pixel, rather than the cells that count it (:meth:`cells`)."""
        return np.asarray(Image.fromarray(self.mask).resize((width, height), Image.NEAREST))

    def summary(self) -> dict:
        """What a report or an answer says of the area: its mask's size and the share inspected."""
        return {"width": self.size[0], "height": self.size[1], "share": round(self.share, 4)}


@functools.lru_cache(maxsize=64)
def care_area(png: bytes) -> CareArea:
    """The area of a stored mask, read once per process (a version's mask never changes)."""
    return CareArea.read(png)


def inspected(features: torch.Tensor, area: CareArea | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The (P, D) patches of (H, W, D) ``features`` that ``area`` inspects, and their flat cell indices (``None``:
    every cell, the patches in the grid's order)."""
    height, width, dim = features.shape
    patches = features.reshape(-1, dim)
    if area is None:
        return patches, None
    cells = area.cells(height, width)
    return patches.index_select(0, cells.to(patches.device)), cells


def spread(values: torch.Tensor, cells: torch.Tensor | None, total: int, outside: float = 0) -> torch.Tensor:
    """(total,) ``values`` of the inspected ``cells`` placed in the whole grid, ``outside`` elsewhere (a cell not
    inspected is at distance 0: it never decides a verdict nor makes a region); ``values`` itself where every cell
    is inspected."""
    if cells is None:
        return values
    whole = torch.full((total,), outside, dtype=values.dtype, device=values.device)
    whole[cells.to(values.device)] = values
    return whole
