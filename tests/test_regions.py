"""Defect regions: the cells above the threshold grouped where they touch, placed in the image, and measured against
ground-truth masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from patchcore import metrics, regions
from patchcore.care import CareArea
from patchcore.rerank import rerank_worst, settle_regions
from patchcore.scoring import ExactSearch
from patchcore.views import Preprocess


def _grid() -> np.ndarray:
    grid = np.zeros((6, 8))
    grid[1, 1], grid[2, 2] = 3.0, 2.0  # touching at a corner: one region
    grid[4, 5:8] = [1.5, 2.5, 1.2]  # a second region, reaching the right edge
    grid[0, 7] = 0.9  # not above the threshold
    return grid


def test_touching_cells_above_the_threshold_make_one_region_worst_first():
    found = regions.find(torch.from_numpy(_grid()), 1.0)
    assert [(r.top, r.left, r.bottom, r.right) for r in found] == [(1, 1, 3, 3), (4, 5, 5, 8)]
    assert [(r.cells, r.row, r.col, r.distance) for r in found] == [(2, 1, 1, 3.0), (3, 4, 6, 2.5)]
    assert found[1].share == pytest.approx(3 / 48)
    assert regions.find(_grid(), 3.0) == []  # nothing above: no region
    assert [r.cells for r in regions.find(_grid(), 1.6)] == [2, 1]  # the second region's ends fall away


def test_a_region_marks_its_inside_the_edge_its_neighbours_pooled_from_it():
    """Each patch feature averages its 3x3 neighbourhood, so a defect's cells raise a ring of one cell around them
    above the threshold: a region marks the cells whose 8 neighbours lie above it too. Beyond the grid's edge or the
    care area nothing is measured, so no cell is taken for an edge there; a region with no such cell (too faint to
    raise its neighbours) is marked whole, and its worst cell always."""
    grid = np.zeros((10, 12))
    grid[1:5, 1:5] = 1.5  # a 2x2 defect at rows 2-3, columns 2-3, grown by one cell
    grid[2:4, 2:4] = [[3.0, 2.8], [2.7, 2.9]]
    grid[4, 5] = 1.2  # a faint arm off its ring: part of the region, not of its inside
    grid[7:10, 9:12] = 1.4  # a defect in the bottom right corner, grown inwards only
    grid[8, 10] = 2.2
    grid[6, 1:3] = 1.3  # a faint region of two cells: marked whole
    grid[6, 2] = 1.6
    cells, labelled, count = regions.marked(grid, 1.0)
    assert count == 3 and labelled[4, 5] == labelled[2, 2] and not cells[4, 5]
    assert np.array_equal(np.argwhere(cells & (labelled == labelled[2, 2])), [[2, 2], [2, 3], [3, 2], [3, 3]])
    assert np.array_equal(np.argwhere(cells & (labelled == labelled[8, 10])), [[8, 10], [8, 11], [9, 10], [9, 11]])
    assert cells[6, 1] and cells[6, 2]  # no inside: all of it
    found = regions.find(grid, 1.0)
    assert [(r.top, r.left, r.bottom, r.right, r.cells, r.row, r.col) for r in found] == [
        (2, 2, 4, 4, 4, 2, 2),
        (8, 10, 10, 12, 4, 8, 10),
        (6, 1, 7, 3, 2, 6, 2),
    ]
    assert found[0].share == pytest.approx(4 / 120)
    # the worst cell names its region and is marked even where it lies on the edge
    grid[1, 1] = 3.5
    worst = regions.find(grid, 1.0)[0]
    assert (worst.cells, worst.row, worst.col, worst.top, worst.left) == (5, 1, 1, 1, 1)
    # a care area that leaves out the grid's first two columns: the ring's left column lies outside it, at distance
    # 0 as an answer gives it; nothing is measured there, so the defect's left cells are not taken for an edge
    grid[1, 1] = 1.5
    grid[:, :2] = 0.0
    area = np.ones((100, 120), dtype=bool)
    area[:, :20] = False
    cells = regions.marked(grid, 1.0, CareArea(area))[0]
    assert np.array_equal(np.argwhere(cells[:6, :6]), [[2, 2], [2, 3], [3, 2], [3, 3]])
    assert np.array_equal(np.argwhere(regions.marked(grid, 1.0)[0][:6, :6]), [[2, 2], [2, 3], [3, 3]])  # no area


def test_the_cells_a_region_marks_say_where_a_grown_defect_is():
    """A defect of 2x2 cells seen grown by one cell on every side: the regions' pixel F1 is the defect's own (1.0),
    where every cell above the threshold would give 2 x 4 / (16 + 4)."""
    mask = np.zeros((80, 96), dtype=bool)
    mask[16:32, 16:32] = True  # cells (2, 2) to (3, 3) of an 8-pixel grid
    grid = np.zeros((10, 12))
    grid[1:5, 1:5] = 1.5
    grid[2:4, 2:4] = 2.5
    figures = regions.localisation([grid], [regions.cell_truth(grid.shape, mask)], [True], 1.0)
    assert figures["pixel_f1"] == 1.0 and figures["defects_found"] == 1.0 and figures["regions_on_defects"] == 1.0


def test_a_region_is_placed_in_the_uploaded_images_own_pixels():
    preprocess = Preprocess()  # whole, 224x224's budget: a 452x184 strip is a 352x144 view, a 44x18 grid
    view = preprocess.view(452, 184)
    grid = np.zeros((18, 44))
    grid[17, 42:44] = 2.0  # the bottom right corner
    grid[0, 0] = 1.5
    corner, origin = (r.placed(view, 8, (452, 184)) for r in regions.find(grid, 1.0))
    assert corner["box_in_view"] == [336, 136, 352, 144] and corner["box"] == [431, 173, 452, 184]
    assert origin["box"] == [0, 0, 11, 11] and (origin["x"], origin["y"]) == (int(4 * 452 / 352), int(4 * 184 / 144))
    crop = Preprocess(field_of_view="crop").view(900, 600)  # resized to 384x256, the centre 224x224 at x 80
    (placed,) = (r.placed(crop, 8, (900, 600)) for r in regions.find(np.pad([[2.0]], ((0, 27), (0, 27))), 1.0))
    assert placed["box"] == [187, 37, 207, 57]  # from (80, 16) of the 384x256 resize to 8 view pixels on


def _hnsw_answer():
    """A 4x4 grid whose worst patch the re-rank searched exactly, one more truly above the threshold beside it, and
    one that HNSW overestimated above it alone: (reranked, patches, search)."""
    bank = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    patches = torch.zeros(4 * 4, 2)
    patches[0] = torch.tensor([5.0, 0.0])  # truly far from the bank: the worst, a real region
    patches[1] = torch.tensor([0.0, 2.0])  # beside it, truly above the threshold (2.0; HNSW: 2.5)
    patches[15] = torch.tensor([0.0, 0.5])  # truly near the bank: HNSW overestimated it
    search = ExactSearch(bank, "l2")
    upper = torch.full((16,), 0.1)
    upper[0], upper[1], upper[15] = 5.0, 2.5, 3.0  # HNSW's distances: never below the exact ones
    reranked = rerank_worst(upper, torch.zeros(16, dtype=torch.long), patches, search, cap=1)
    assert reranked.searched == 1 and float(reranked.distances[0]) == 5.0
    assert [r.cells for r in regions.find(reranked.distances.reshape(4, 4), 1.0)] == [2, 1]  # one of nothing
    return reranked, patches, search


def test_every_cell_above_the_threshold_is_searched_again_where_the_cap_leaves_room():
    reranked, patches, search = _hnsw_answer()
    assert settle_regions(reranked, patches, search, 1.0, (4, 4), cap=64) == 2
    assert float(reranked.distances[15]) == pytest.approx(0.5) and float(reranked.distances[1]) == pytest.approx(2.0)
    assert [(r.cells, r.row, r.col) for r in regions.find(reranked.distances.reshape(4, 4), 1.0)] == [(2, 0, 0)]
    assert settle_regions(reranked, patches, search, 1.0, (4, 4), cap=64) == 0  # every cell above it exact now


def test_where_the_cap_leaves_less_room_a_region_no_exact_distance_proves_comes_first():
    reranked, patches, search = _hnsw_answer()
    assert settle_regions(reranked, patches, search, 1.0, (4, 4), cap=2) == 1  # room for one of the two
    assert float(reranked.distances[15]) == pytest.approx(0.5) and float(reranked.distances[1]) == 2.5
    assert [(r.cells, r.row, r.col) for r in regions.find(reranked.distances.reshape(4, 4), 1.0)] == [(2, 0, 0)]
    assert settle_regions(reranked, patches, search, 1.0, (4, 4), cap=2) == 0  # the cap is spent


def test_localisation_counts_defects_found_and_regions_on_them():
    mask = np.zeros((48, 64), dtype=bool)
    mask[8:16, 8:16] = True  # the defect under cell (1, 1)
    mask[40:44, 60:64] = True  # a second, missed
    grid = np.zeros((6, 8))
    grid[1, 1] = grid[4, 2] = 2.0  # one region on the defect, one beside it
    good = np.zeros((6, 8))
    good[0, 0] = 2.0
    truths = [regions.cell_truth(grid.shape, m) for m in (mask, np.zeros_like(mask), np.zeros_like(mask))]
    figures = regions.localisation([grid, good, good], truths, [True, True, False], 1.0)
    assert figures["defects"] == 2 and figures["defects_found"] == 0.5
    assert figures["regions_on_defective_parts"] == 2 and figures["regions_on_defects"] == 0.5
    assert figures["regions_on_good_parts"] == 1  # the false alarm's; the part judged normal has none
    marked = 2 * 64 + 64  # two cells on the defective part, one on the false alarm
    assert figures["pixel_f1"] == pytest.approx(2 * 64 / (marked + 64 + 16))
    assert (figures["pixel_precision"], figures["pixel_recall"]) == pytest.approx((64 / marked, 64 / 80))
    missed = regions.localisation([grid], truths[:1], [False], 1.0)  # a defective part judged normal finds nothing
    assert missed["defects_found"] == 0.0 and missed["regions_on_defects"] is None and missed["pixel_f1"] == 0.0


def test_the_regions_judged_from_kept_cells_are_those_judged_pixel_by_pixel_at_any_threshold():
    """A stored fit keeps each test image's grid and its truth on that grid (packed), not its mask: judged again at
    another threshold they must give what the masks give, pixel by pixel (cells that do not divide the view
    evenly, several defects, good parts)."""
    generator = np.random.default_rng(3)
    grids, masks = [], []
    for shape, size, count in (((6, 8), (50, 70), 2), ((5, 5), (37, 41), 0), ((4, 9), (33, 80), 3)):
        grids.append(generator.gamma(2.0, 0.5, shape).astype(np.float32))  # as the scorer gives them
        mask = np.zeros(size, dtype=bool)
        for _ in range(count):
            top, left = generator.integers(0, size[0] - 6), generator.integers(0, size[1] - 6)
            mask[top : top + generator.integers(1, 7), left : left + generator.integers(1, 7)] = True
        masks.append(mask)
    images, kept, truths = regions.unpacked(
        regions.packed([0, 2, 5], grids, [regions.cell_truth(g.shape, m) for g, m in zip(grids, masks, strict=True)])
    )
    assert images == [0, 2, 5] and all(np.array_equal(a, b) for a, b in zip(kept, grids, strict=True))
    assert sum(len(t.defects) for t in truths) >= 2 and not truths[1].defects  # defects, and a good part
    for threshold in (0.5, 1.0, 1.5, 2.5):
        verdicts = [bool(g.max() > threshold) for g in grids]
        figures = regions.localisation(kept, truths, verdicts, threshold)
        assert figures == regions.localisation(
            grids, [regions.cell_truth(g.shape, m) for g, m in zip(grids, masks, strict=True)], verdicts, threshold
        )
        # pixel by pixel: each pixel takes its cell's region, as the view shows them
        true_positive = predicted = found = defects = 0
        for grid, mask, anomalous in zip(grids, masks, verdicts, strict=True):
            rows = np.minimum(np.arange(mask.shape[0]) * grid.shape[0] // mask.shape[0], grid.shape[0] - 1)
            cols = np.minimum(np.arange(mask.shape[1]) * grid.shape[1] // mask.shape[1], grid.shape[1] - 1)
            marked = (regions.marked(grid, threshold)[0] & anomalous)[np.ix_(rows, cols)]
            true_positive, predicted = true_positive + (marked & mask).sum(), predicted + marked.sum()
            truth, count = regions.groups(mask)
            defects, found = defects + count, found + len(set(np.unique(truth[marked])) - {0})
        actual = sum(m.sum() for m in masks)
        assert figures["pixel_f1"] == pytest.approx(
            2 * true_positive / (predicted + actual) if predicted + actual else None
        )
        assert figures["defects"] == defects and figures["defects_found"] == (found / defects if defects else None)


def test_the_best_f1_is_the_best_over_every_threshold():
    generator = np.random.default_rng(1)
    maps = [generator.random((5, 7)) for _ in range(3)]
    masks = [m + generator.normal(0, 0.3, m.shape) > 0.9 for m in maps]
    scores, labels = metrics.pooled(maps), metrics.pooled(masks)
    brute = max(2 * (labels & (scores >= t)).sum() / ((scores >= t).sum() + labels.sum()) for t in scores)
    assert metrics.best_f1(maps, masks) == pytest.approx(brute)
    with pytest.raises(ValueError):
        metrics.best_f1(maps, [np.zeros_like(m, dtype=bool) for m in maps])
