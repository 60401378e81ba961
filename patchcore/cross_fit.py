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
banks) scored 3-4% high, K = 2 up to 1% low with a wider spread. K = 3 costs three selections from two thirds of
the patches and one exact search of every training patch (bottle, 2 CPU cores: about 50 s).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from patchcore import scoring
from patchcore.coreset import coreset_size, greedy_selection
from patchcore.scoring import ExactSearch, Metric

FOLDS = 3
_BATCH = 8


def fold_of(count: int, folds: int, seed: int) -> torch.Tensor:
    """(count,) fold of each image: a seeded permutation dealt round-robin, so fold sizes differ by at most one."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    fold = torch.empty(count, dtype=torch.long)
    fold[order] = torch.arange(count) % folds
    return fold


def cross_fitted_scores(
    features: torch.Tensor,
    projection: torch.Tensor,
    ratio: float,
    metric: Metric,
    b: int,
    seed: int,
    folds: int | None = None,
    progress: Callable[[int], object] | None = None,
) -> list[float]:
    """Image score of each of the N images of ``features`` (N, P, D), each against a coreset of the served bank's
    size (``ratio`` of all N * P patches) selected from the other folds' patches (``projection`` (N * P, d): the
    same projected patches the fit's coreset used).
    ``progress`` is called with the number of images scored. Needs N >= 2."""
    count, per_image, dim = features.shape
    if count < 2:
        raise ValueError("cross-fitted scores need at least two images")
    folds = min(folds or FOLDS, count)
    centres = coreset_size(count * per_image, ratio)
    fold = fold_of(count, folds, seed)
    flat = features.reshape(-1, dim)
    scores = torch.empty(count, dtype=torch.float64)
    for k in range(folds):
        rest = torch.nonzero(fold != k).flatten()
        rows = (rest[:, None] * per_image + torch.arange(per_image)).reshape(-1)
        points = projection.index_select(0, rows.to(projection.device))
        chosen = greedy_selection(points, min(centres, rows.numel()), seed)
        search = ExactSearch(flat.index_select(0, rows[chosen]), metric)
        members = torch.nonzero(fold == k).flatten()
        for start in range(0, members.numel(), _BATCH):
            batch = members[start : start + _BATCH]
            distances, index = search.nearest_one(features[batch].reshape(-1, dim))
            distances, index = distances.view(-1, per_image), index.view(-1, per_image)
            for j, image in enumerate(batch.tolist()):
                scores[image] = scoring.image_score(distances[j], index[j], features[image], search, b)
            if progress is not None:
                progress(batch.numel())
    return scores.tolist()


def coverage_radius(patches: torch.Tensor, search: ExactSearch, chunk: int = 8192) -> float:
    """The coreset's radius in the bank's metric: the largest distance from a training patch (rows of ``patches``)
    to its nearest memory-bank patch. Added normals extend the bank to the same radius."""
    radius = 0.0
    for start in range(0, patches.shape[0], chunk):
        radius = max(radius, float(search.nearest_one(patches[start : start + chunk])[0].max()))
    return radius
