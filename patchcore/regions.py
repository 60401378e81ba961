"""Where an anomalous part's defects are: its patches that score above the threshold, grouped into regions.

The threshold is set so that a new good part's worst patch rarely lies above it (the verdict's false-alarm rate;
eq. 7 only lowers an image score below its largest patch distance), so a patch above it is as unusual as a
verdict needs, and a region is a group of such patches that touch (8-connected). No second threshold is learnt,
none could be from good images alone, and the regions agree with the verdict by construction: an anomalous part's
largest patch distance is above the threshold, so it has at least one region; a normal part is given none.

What a region marks is its inside where it has one. Each patch feature is the average of its cell's and its 8
neighbours' (:func:`patchcore.features.aggregate`'s 3x3 pooling), so a defect confined to some cells raises their
neighbours too: the cells above the threshold are the defect grown by one cell on every side. Eroding by the same
3x3 neighbourhood undoes that growth (the erosion of a dilation is the closing: the defect itself, its gaps of one
cell filled): a cell is the region's inside where its 8 neighbours lie above the threshold too (a neighbour beyond
the grid or the care area, which nothing is measured at, counts as above). A region with no inside, where no cell
stands clear of the edge (a defect too faint to raise its neighbours above the threshold), is marked whole; the
worst cell, which names the region, is always marked.

Regions lie on the patch grid, the model's own resolution: a cell is ``stride`` pixels of the view on each side.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from patchcore.care import CareArea
from patchcore.views import View

_TOUCHING = np.ones((3, 3), dtype=bool)  # 8-connected: cells that share a corner belong to one region
_POOLED = np.ones((3, 3), dtype=bool)  # the neighbourhood each patch feature averages over (patchcore.features)


@dataclass(frozen=True)
class Region:
    """One group of touching cells above the threshold: its bounding box in grid cells (``bottom`` and ``right``
    exclusive), how many cells it holds and their share of the grid, and its worst cell with that cell's
    distance."""

    top: int
    left: int
    bottom: int
    right: int
    cells: int
    share: float
    row: int
    col: int
    distance: float

    def placed(self, view: View, stride: int, size: tuple[int, int]) -> dict:
        """The region as an answer gives it: its box (left, top, right, bottom) in the ``size`` (width, height)
        image's own pixels, covering its cells, and in the view's; its worst cell's centre in the image."""
        in_view = [
            min(self.left * stride, view.width), min(self.top * stride, view.height),
            min(self.right * stride, view.width), min(self.bottom * stride, view.height),
        ]  # fmt: skip
        left, top = view.to_original(in_view[0], in_view[1])
        right, bottom = view.to_original(in_view[2], in_view[3])
        x, y = view.to_original((self.col + 0.5) * stride, (self.row + 0.5) * stride)
        return {
            "box": [max(0, math.floor(left)), max(0, math.floor(top)), min(size[0], math.ceil(right)),
                    min(size[1], math.ceil(bottom))],
            "box_in_view": in_view, "patches": self.cells, "share": self.share, "row": self.row, "col": self.col,
            "x": int(x), "y": int(y), "distance": self.distance,
        }  # fmt: skip


def _grid(patch_scores: torch.Tensor | np.ndarray) -> np.ndarray:
    grid = patch_scores.detach().cpu().numpy() if isinstance(patch_scores, torch.Tensor) else patch_scores
    return np.asarray(grid, dtype=np.float64)


def above(patch_scores: torch.Tensor | np.ndarray, threshold: float) -> np.ndarray:
    """(H, W) bool: the cells whose patch distance is above ``threshold``."""
    return _grid(patch_scores) > threshold


def groups(cells: np.ndarray) -> tuple[np.ndarray, int]:
    """(H, W) bool cells labelled by the region each belongs to (1, 2, ...; 0 outside), and how many regions."""
    return ndimage.label(cells, structure=_TOUCHING)


def _worst(grid: np.ndarray, labelled: np.ndarray) -> list[tuple[int, int]]:
    """Each region's worst cell (row, col), in label order (the first in reading order among equals)."""
    worst = []
    for label, box in enumerate(ndimage.find_objects(labelled), start=1):
        values = np.where(labelled[box] == label, grid[box], -np.inf)
        row, col = np.unravel_index(int(np.argmax(values)), values.shape)
        worst.append((int(row) + box[0].start, int(col) + box[1].start))
    return worst


def marked(
    patch_scores: torch.Tensor | np.ndarray, threshold: float, care: CareArea | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """The regions of an (H, W) grid of patch distances above ``threshold``: the cells they mark ((H, W) bool: each
    region's inside where it has one, else all of it, and its worst cell; see the module's docstring), the cells
    above the threshold labelled by their region (1, 2, ...; 0 elsewhere), and how many regions. ``care``: the
    category's care area, outside which no cell is measured."""
    cells, labelled, worst = _marked(_grid(patch_scores), threshold, care)
    return cells, labelled, len(worst)


def _marked(
    grid: np.ndarray, threshold: float, care: CareArea | None
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """:func:`marked`, with each region's worst cell in label order in place of the count."""
    above_it = above(grid, threshold)
    labelled, count = groups(above_it)
    if count == 0:
        return above_it, labelled, []
    unmeasured = np.zeros_like(above_it) if care is None else ~care.cell_grid(*grid.shape)
    inside = ndimage.binary_erosion(above_it | unmeasured, _POOLED, border_value=1) & above_it
    cored = np.zeros(count + 1, dtype=bool)
    cored[labelled[inside]] = True
    cells = np.where(cored[labelled], inside, above_it)
    worst = _worst(grid, labelled)
    for row, col in worst:
        cells[row, col] = True
    return cells, labelled, worst


def find(patch_scores: torch.Tensor | np.ndarray, threshold: float, care: CareArea | None = None) -> list[Region]:
    """The regions of an (H, W) grid of patch distances above ``threshold``, worst first, each boxing the cells it
    marks (:func:`marked`)."""
    grid = _grid(patch_scores)
    cells, labelled, worst = _marked(grid, threshold, care)
    found = []
    for (label, box), (row, col) in zip(enumerate(ndimage.find_objects(labelled), start=1), worst, strict=True):
        mine = (labelled[box] == label) & cells[box]
        rows, cols = np.flatnonzero(mine.any(axis=1)), np.flatnonzero(mine.any(axis=0))
        found.append(
            Region(
                top=box[0].start + int(rows[0]), left=box[1].start + int(cols[0]),
                bottom=box[0].start + int(rows[-1]) + 1, right=box[1].start + int(cols[-1]) + 1,
                cells=int(mine.sum()), share=float(mine.sum() / grid.size), row=row, col=col,
                distance=float(grid[row, col]),
            )
        )  # fmt: skip
    return sorted(found, key=lambda region: -region.distance)


def _cell_of(length: int, cells: int) -> np.ndarray:
    """The grid row (or column) each of ``length`` view pixels lies in: each cell covers its share of the view."""
    return np.minimum((np.arange(length) * cells) // length, cells - 1)


@dataclass(frozen=True)
class CellTruth:
    """An image's ground truth as its patch grid sees it, all that :func:`localisation` needs: the view's pixels
    each grid row and column covers (``rows``, ``cols``), the defective pixels in each cell (``defect_pixels``,
    (H, W)) and, for each true defect (an 8-connected region of the mask), the flat indices of the cells it
    touches (``defects``). Kept with a stored fit, it judges the regions again at any threshold without a mask."""

    rows: np.ndarray
    cols: np.ndarray
    defect_pixels: np.ndarray
    defects: tuple[np.ndarray, ...]


def cell_truth(shape: tuple[int, int], mask: np.ndarray) -> CellTruth:
    """The :class:`CellTruth` of a (height, width) view ``mask`` (bool) on an ``shape`` (H, W) patch grid."""
    mask = np.asarray(mask, dtype=bool)
    row_of, col_of = _cell_of(mask.shape[0], shape[0]), _cell_of(mask.shape[1], shape[1])
    ys, xs = np.nonzero(mask)
    flat = row_of[ys] * shape[1] + col_of[xs]
    defect_pixels = np.bincount(flat, minlength=shape[0] * shape[1]).reshape(shape)
    truth, _ = groups(mask)
    labels = truth[ys, xs]
    defects = tuple(np.unique(flat[labels == label]) for label in range(1, int(labels.max(initial=0)) + 1))
    return CellTruth(np.bincount(row_of, minlength=shape[0]), np.bincount(col_of, minlength=shape[1]),
                     defect_pixels, defects)  # fmt: skip


def localisation(
    grids: Sequence[np.ndarray],
    truths: Sequence[CellTruth],
    verdicts: Sequence[bool],
    threshold: float,
    care: CareArea | None = None,
) -> dict:
    """How well the regions of the parts judged anomalous say where the defects are, against ground truth in the
    view's geometry (one per image, :func:`cell_truth` of its mask; no defective pixel for a good part).

    ``defects_found``: the share of the true defects (8-connected regions of the masks) that a region marks a cell
    of, counting a missed part's defects as not found; ``regions_on_defects``: the share of the regions on
    defective parts that mark a cell of a true defect; ``regions_on_good_parts``: regions on good parts (only a
    false alarm has any); ``pixel_f1`` (with its precision and recall): the cells the regions mark (:func:`marked`)
    spread over the view as a mask, against the true masks, pixel by pixel over every image. ``care``: as for
    :func:`marked`."""
    defects = found = on_defect = regions_on_defective = on_good = 0
    true_positive = predicted = actual = 0
    for grid, truth, anomalous in zip(grids, truths, verdicts, strict=True):
        if anomalous:
            cells, labelled, count = marked(grid, threshold, care)
            labelled = np.where(cells, labelled, 0)
        else:
            cells, labelled, count = np.zeros(np.shape(grid), dtype=bool), np.zeros(np.shape(grid), dtype=int), 0
        true_positive += int(truth.defect_pixels[cells].sum())
        predicted += int(np.outer(truth.rows, truth.cols)[cells].sum())
        actual += int(truth.defect_pixels.sum())
        if not truth.defects:
            on_good += count
            continue
        defects += len(truth.defects)
        found += sum(bool(cells.flat[defect].any()) for defect in truth.defects)
        regions_on_defective += count
        on_defect += len(set(np.unique(labelled[truth.defect_pixels > 0])) - {0})
    f1 = 2 * true_positive / (predicted + actual) if predicted + actual else None
    return {
        "threshold": threshold,
        "defects": defects,
        "defects_found": found / defects if defects else None,
        "regions_on_defective_parts": regions_on_defective,
        "regions_on_defects": on_defect / regions_on_defective if regions_on_defective else None,
        "regions_on_good_parts": on_good,
        "pixel_f1": f1,
        "pixel_precision": true_positive / predicted if predicted else None,
        "pixel_recall": true_positive / actual if actual else None,
    }


def packed(images: Sequence[int], grids: Sequence[np.ndarray], truths: Sequence[CellTruth]) -> bytes:
    """The evaluation's ``images`` (their positions among its test images), their patch grids and truths as one
    compressed archive of plain arrays (bottle's 83 test images: 371,302 bytes), for the store."""
    arrays = {"images": np.asarray(images, dtype=np.int64)}
    for i, (grid, truth) in enumerate(zip(grids, truths, strict=True)):
        cells = np.flatnonzero(truth.defect_pixels)
        arrays |= {
            f"grid{i}": _grid(grid).astype(np.float32), f"rows{i}": truth.rows, f"cols{i}": truth.cols,
            f"cells{i}": cells, f"pixels{i}": truth.defect_pixels.flat[cells],
            f"defects{i}": np.concatenate([np.zeros(0, dtype=np.int64), *truth.defects]),
            f"ends{i}": np.cumsum([len(d) for d in truth.defects], dtype=np.int64),
        }  # fmt: skip
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def unpacked(data: bytes) -> tuple[list[int], list[np.ndarray], list[CellTruth]]:
    """What :func:`packed` kept: the images' positions, their grids and their truths."""
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        images = arrays["images"].tolist()
        grids, truths = [], []
        for i in range(len(images)):
            grid, rows, cols = arrays[f"grid{i}"], arrays[f"rows{i}"], arrays[f"cols{i}"]
            defect_pixels = np.zeros(grid.size, dtype=np.int64)
            defect_pixels[arrays[f"cells{i}"]] = arrays[f"pixels{i}"]
            defects = tuple(np.split(arrays[f"defects{i}"], arrays[f"ends{i}"][:-1]))
            grids.append(grid)
            truths.append(CellTruth(rows, cols, defect_pixels.reshape(grid.shape), defects if defects[0].size else ()))
    return images, grids, truths
