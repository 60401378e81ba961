"""Good scores that predict how new good parts score: K-fold cross-fitting of the memory bank.

A threshold set at a false-alarm rate needs scores of good images *as the model scores a good part it has never
seen*. A new good part meets a memory bank whose coreset was chosen without it. Scoring a training image against the
final bank with its own rows removed (leave one image out) is not that: the greedy coreset picks each image's most
unusual patches, and removing them leaves exactly those uncovered, which a new good part does not suffer. On the
screws at a 1% coreset that bias put the threshold above every good test part (recall 0.24).

Cross-fitting removes the bias by construction: the bank images are split into K seeded folds; for each fold a
coreset is selected, by the same greedy rule on the same projection, from the other folds' patches only, and the
fold's images are scored against it exactly as a query is (nearest patch, eq. 7 over the b nearest). Each fold's
coreset has as many patches as the served one (the ratio applied to all the images): a part's score depends on how
densely the bank covers good variation, which is set by the number of centres, so the bank a fold image meets is
the served bank's size, chosen without it. What is left is that it was chosen from (K - 1) / K of the images.

Measured at a 1% coreset on screws and bsdata (``benchmarks/threshold_policy.py``, README): K = 3 with matched
sizes put the cross-fitted median within 0.4% of the good test images' median; K = 5 at the same ratio (smaller
banks) scored 3-4% high, K = 2 up to 1% low with a wider spread. K = 3 costs three coreset selections from two thirds of
the patches, most of its time (bottle, 2 CPU cores: about 49 s in all); the scoring searches only the patches that
can be an image's worst (:func:`_farthest`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from patchcore import scoring
from patchcore.coreset import Selection, greedy_continued
from patchcore.scoring import ExactSearch, Metric

FOLDS = 10
_PATCHES = 64


def fold_of(count: int, folds: int, seed: int) -> torch.Tensor:
    """(count,) fold of each image: a seeded permutation dealt round-robin, so fold sizes differ by at most one."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    fold = torch.empty(count, dtype=torch.long)
    fold[order] = torch.arange(count) % folds
    return fold


def cross_fitted_scores(
    features: torch.Tensor,
    offsets: torch.Tensor,
    projection: torch.Tensor,
    selection: Selection,
    metric: Metric,
    b: int,
    seed: int,
    folds: int | None = None,
    progress: Callable[[int], object] | None = None,
) -> list[float]:
    """Image score of each of the N images whose patches are the rows ``offsets[i]:offsets[i + 1]`` of ``features``
    (M, D) (images may differ in size), each against a coreset of the served bank's size selected without its fold:
    ``selection`` (the served coreset's greedy selection over all M projected patches ``projection`` (M, d)) minus
    the fold's centres, continued by the greedy rule over the other folds' patches
    (:func:`patchcore.coreset.greedy_continued`). ``progress`` is called with the number of images scored. Needs
    N >= 2."""
    count = offsets.numel() - 1
    if count < 2:
        raise ValueError("cross-fitted scores need at least two images")
    folds = min(folds or FOLDS, count)
    centres = selection.indices.numel()
    fold = fold_of(count, folds, seed)
    fold_of_row = fold[torch.repeat_interleave(torch.arange(count), offsets.diff())]
    fold_of_centre = fold_of_row[selection.indices]
    scores = torch.empty(count, dtype=torch.float64)
    for k in range(folds):
        rows = torch.nonzero(fold_of_row != k).flatten()
        kept = torch.nonzero(fold_of_centre != k).flatten()
        renumbered = torch.full((centres,), -1, dtype=torch.long)
        renumbered[kept] = torch.arange(kept.numel())
        position = torch.full((fold_of_row.numel(),), -1, dtype=torch.long)
        position[rows] = torch.arange(rows.numel())
        points = projection.index_select(0, rows.to(projection.device))
        continued = greedy_continued(
            points,
            min(centres, rows.numel()),
            position[selection.indices[kept]],
            renumbered[selection.owner[rows]],
            seed,
        )
        search = ExactSearch(features.index_select(0, rows[continued.indices]), metric)
        centre_points = points.index_select(0, continued.indices.to(points.device))
        for image in torch.nonzero(fold == k).flatten().tolist():
            patches = features[offsets[image] : offsets[image + 1]]
            mine = projection[offsets[image] : offsets[image + 1]]
            scores[image] = _worst_patch_score(patches, _projected_nearest(mine, centre_points), search, b)
            if progress is not None:
                progress(1)
    return scores.tolist()


def _projected_nearest(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """(P,) CPU index of each projected point's nearest projected centre: a cheap guess of its nearest bank row."""
    keys = torch.addmm((centres * centres).sum(1), points, centres.T, alpha=-2.0)
    return keys.argmin(1).cpu()


def _farthest(patches: torch.Tensor, upper: torch.Tensor, search: ExactSearch, chunk: int) -> tuple[float, int, int]:
    """(distance, patch, bank row) of the patch of ``patches`` farthest from its nearest bank row, found exactly
    while searching only the patches that can be it: ``upper`` bounds each patch's nearest distance from above (the
    distance to some bank row), so patches are searched in decreasing order of it, ``chunk`` at a time, until it
    falls to the largest exact distance found: no patch left can lie farther."""
    order = torch.argsort(upper, descending=True)
    farthest = (-1.0, 0, 0)
    for start in range(0, order.numel(), chunk):
        block = order[start : start + chunk]
        if float(upper[block[0]]) <= farthest[0]:
            break
        distances, index = search.nearest_one(patches.index_select(0, block))
        at = int(torch.argmax(distances))
        if float(distances[at]) > farthest[0]:
            farthest = (float(distances[at]), int(block[at]), int(index[at]))
    return farthest


def _worst_patch_score(patches: torch.Tensor, near: torch.Tensor, search: ExactSearch, b: int) -> float:
    """The image score of ``patches`` (P, D), exactly as :func:`patchcore.scoring.image_score` gives it from a
    search of every patch: the worst patch is found from the upper bounds that the bank rows ``near`` give."""
    upper = search.pairwise(patches, search.bank.index_select(0, near))
    distance, patch, row = _farthest(patches, upper, search, _PATCHES)
    return scoring.image_score(torch.tensor([distance]), torch.tensor([row]), patches[patch][None], search, b)


def coverage_radius(patches: torch.Tensor, search: ExactSearch, near: torch.Tensor, chunk: int = 8192) -> float:
    """The coreset's radius in the bank's metric: the largest distance from a training patch (rows of ``patches``)
    to its nearest memory-bank patch. Added normals extend the bank to the same radius. Exact, at a fraction of a
    search of every patch: ``near`` names for each patch a bank row near it (its nearest centre in the coreset's
    projected space), whose distance bounds its nearest distance from above (:func:`_farthest`)."""
    upper = torch.empty(patches.shape[0])
    for start in range(0, patches.shape[0], chunk):
        rows = search.bank.index_select(0, near[start : start + chunk])
        upper[start : start + chunk] = search.pairwise(patches[start : start + chunk], rows)
    return max(0.0, _farthest(patches, upper, search, chunk)[0])
