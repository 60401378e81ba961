"""Good scores that predict how new good parts score: K-fold cross-fitting of the memory bank.

A threshold set at a false-alarm rate needs scores of good images *as the model scores a good part it has never
seen*. A new good part meets a memory bank whose coreset was chosen without it. Scoring a training image against the
final bank with its own rows removed (leave one image out) is not that: the greedy coreset picks each image's most
unusual patches, and removing them leaves exactly those uncovered, which a new good part does not suffer. On the
screws at a 1% coreset that bias put the threshold above every good test part (recall 0.24).

Cross-fitting removes the bias by construction: the bank images are split into K seeded folds, and each fold's
images are scored, exactly as a query is (nearest patch, eq. 7 over the b nearest), against a coreset that holds
nothing of the fold. That coreset is the served one's greedy selection with the fold's centres dropped, continued
by the same greedy rule, on the same projection, over the other folds' patches until it has the served bank's
size (:func:`patchcore.coreset.greedy_continued`): what only the fold's centres covered is covered again by the
farthest patches left, as a selection made without the fold covers it, so the fold's unusual patches stay
uncovered unless other images have them too, exactly as for a new part. The size matters because a part's score
depends on how densely the bank covers good variation, which the number of centres sets.

What is left is that the bank was chosen from (K - 1) / K of the images: a part with a rare kind of good look is
less likely to find it among fewer images, so the upper tail of the scores, the part a threshold is set in, falls
as K grows. Measured on the screws at a 1% coreset (a scratch script, fresh selections per fold, the bank from all
200 training images): the log-normal 95th percentile of the scores 1.847 at K = 2, 1.821 at 3, 1.791 at 5, 1.782
at 10, against the good test images' 1.769 (95th percentile); medians 1.647-1.658 at every K (good test images
1.657). Continuing the served selection instead gave the same within noise (1.813 at K = 3, 1.792 at 10, 1.798
leaving one image out), at a fraction of the cost: a fold needs only its dropped centres chosen again, so K = 10
costs about one selection in all (screws at 1%: 11 s, against 31 s for 3 fresh selections and 133 s for 10);
leaving each image out gained nothing more (43 s). The scoring searches only the patches that can be an image's
worst (:func:`_farthest`), and a patch whose served centre was the fold's finds its nearest centre left among
those within reach of that centre only (:func:`patchcore.coreset.nearest_centre_near`): on 914 images of three
sets at a 10% coreset the cross-fit took 241 s with both, 403 s without (the same scores).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from patchcore import scoring
from patchcore.coreset import Selection, greedy_continued, nearest_centre, nearest_centre_near
from patchcore.scoring import ExactSearch, Metric

FOLDS = 10
# an image's patches searched for its worst one: 8 at first (a search of 8 against a 72,000-row bank takes about
# half the time of 64, and the 8 with the highest bounds hold the worst patch and every patch that bounds can't rule
# out in 96% of the screws' images), then twice as many each time, up to 256
_PATCHES = (8, 256)


def fold_of(groups: torch.Tensor, folds: int, seed: int) -> torch.Tensor:
    """(N,) fold of each of N images, whose parts are ``groups`` (N,) (equal ids: views of one part): the parts in a
    seeded order, each dealt whole to the fold with the fewest images so far (the lowest such fold on a tie). A part
    is never split, so no view of a fold's part is in the coreset it is scored against, as no view of a new part is
    in the served one. Where every image is its own part this is a seeded permutation dealt round robin: fold sizes
    differ by at most one."""
    names, group = torch.unique(groups, return_inverse=True)
    sizes = torch.bincount(group, minlength=names.numel()).tolist()
    order = torch.randperm(names.numel(), generator=torch.Generator().manual_seed(seed)).tolist()
    load = [0] * folds
    fold_of_group = [0] * names.numel()
    for g in order:
        k = min(range(folds), key=load.__getitem__)
        fold_of_group[g] = k
        load[k] += sizes[g]
    return torch.tensor(fold_of_group, dtype=torch.long)[group]


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
    groups: torch.Tensor | None = None,
) -> list[float]:
    """Image score of each of the N images whose patches are the rows ``offsets[i]:offsets[i + 1]`` of ``features``
    (M, D) (images may differ in size), each against a coreset of the served bank's size selected without its fold:
    ``selection`` (the served coreset's greedy selection over all M projected patches ``projection`` (M, d)) minus
    the fold's centres, continued by the greedy rule over the other folds' patches
    (:func:`patchcore.coreset.greedy_continued`). ``groups`` (N,): the part each image shows, where a part was
    photographed several times (unset: each image its own); a part's views share a fold (:func:`fold_of`).
    ``progress`` is called with the number of images scored. Needs N >= 2 images of at least two parts."""
    count = offsets.numel() - 1
    groups = torch.arange(count) if groups is None else groups
    parts = torch.unique(groups).numel()
    if count < 2 or parts < 2:
        raise ValueError("cross-fitted scores need at least two images of two parts")
    folds = min(folds or FOLDS, parts)
    centres = selection.indices.numel()
    fold = fold_of(groups, folds, seed)
    fold_of_row = fold[torch.repeat_interleave(torch.arange(count), offsets.diff())]
    fold_of_centre = fold_of_row[selection.indices]
    owner = selection.owner.cpu()
    scores = torch.empty(count, dtype=torch.float64)
    for k in range(folds):
        in_fold = fold_of_row == k
        rows = torch.nonzero(~in_fold).flatten()
        kept = torch.nonzero(fold_of_centre != k).flatten()
        renumbered = torch.full((centres,), -1, dtype=torch.long)
        renumbered[kept] = torch.arange(kept.numel())
        position = torch.full((fold_of_row.numel(),), -1, dtype=torch.long)
        position[rows] = torch.arange(rows.numel())
        points = projection.index_select(0, rows.to(projection.device))
        chosen = position[selection.indices[kept]]
        # each patch's served centre, in the continued selection's order (kept first: ``renumbered``); a patch whose
        # centre was the fold's is matched anew, near that centre (its anchor, :func:`nearest_centre_near`)
        near = renumbered[owner]
        dropped = torch.nonzero(fold_of_centre == k).flatten()
        anchors = projection.index_select(0, selection.indices[dropped].to(projection.device))
        anchor_of = torch.full((centres,), -1, dtype=torch.long)
        anchor_of[dropped] = torch.arange(dropped.numel())
        _match_lost(near, rows, projection, anchors, anchor_of, owner, points.index_select(0, chosen.to(points.device)))
        continued = greedy_continued(points, min(centres, rows.numel()), chosen, near[rows], seed)
        search = ExactSearch(features.index_select(0, rows[continued.indices]), metric)
        # the fold's own patches against the continued centres: a bank row near each, whose distance bounds its
        # nearest one (only those whose served centre was the fold's are matched anew; bottle: 24% of them)
        centre_points = points.index_select(0, continued.indices.to(points.device))
        _match_lost(near, torch.nonzero(in_fold).flatten(), projection, anchors, anchor_of, owner, centre_points)
        for image in torch.nonzero(fold == k).flatten().tolist():
            patches = features[offsets[image] : offsets[image + 1]]
            scores[image] = _worst_patch_score(patches, near[offsets[image] : offsets[image + 1]], search, b)
            if progress is not None:
                progress(1)
    return scores.tolist()


def _match_lost(
    near: torch.Tensor,
    rows: torch.Tensor,
    projection: torch.Tensor,
    anchors: torch.Tensor,
    anchor_of: torch.Tensor,
    owner: torch.Tensor,
    centres: torch.Tensor,
) -> None:
    """Fill in ``near`` (a position in ``centres``, -1 where unknown) for the patches ``rows``: each unknown one gets
    its nearest of ``centres`` in the projection, found near its served centre (``anchors[anchor_of[owner]]``)."""
    lost = rows[near.index_select(0, rows) < 0]
    if lost.numel() and centres.shape[0]:  # with no centre left, the continued selection starts afresh
        mine = projection.index_select(0, lost.to(projection.device))
        near[lost] = nearest_centre_near(mine, anchors, anchor_of[owner[lost]], centres).cpu()


def _farthest(
    patches: torch.Tensor, upper: torch.Tensor, search: ExactSearch, chunk: int, most: int
) -> tuple[float, int, int]:
    """(distance, patch, bank row) of the patch of ``patches`` farthest from its nearest bank row, found exactly
    while searching only the patches that can be it: ``upper`` bounds each patch's nearest distance from above (the
    distance to some bank row), so patches are searched in decreasing order of it, in blocks of ``chunk`` doubling
    up to ``most``, until it falls to the largest exact distance found: no patch left can lie farther."""
    order = torch.argsort(upper, descending=True)
    farthest = (-1.0, 0, 0)
    start = 0
    while start < order.numel():
        block = order[start : start + chunk]
        if float(upper[block[0]]) <= farthest[0]:
            break
        distances, index = search.nearest_one(patches.index_select(0, block))
        at = int(torch.argmax(distances))
        if float(distances[at]) > farthest[0]:
            farthest = (float(distances[at]), int(block[at]), int(index[at]))
        start, chunk = start + chunk, min(2 * chunk, most)
    return farthest


def held_out_score(
    patches: torch.Tensor, projected: torch.Tensor, centre_points: torch.Tensor, search: ExactSearch, b: int
) -> float:
    """The score of an image held out of the bank, ``patches`` (P, D), against ``search``'s bank, exactly as a
    search of every patch gives it (eq. 7 too; its map is not needed), where ``projected`` are the patches in the
    coreset's projection and ``centre_points`` the bank's rows there: each patch's nearest of them names a bank row
    whose distance bounds its nearest one, so only the patches that can be the worst are searched in full (the fit's
    held-out stage, 91 of 914 images at a 10% coreset, reading and embedding included: 25 s against 70 s with a
    search of every patch)."""
    near = nearest_centre(projected, centre_points).cpu()
    return _worst_patch_score(patches, near, search, b)


def _worst_patch_score(patches: torch.Tensor, near: torch.Tensor, search: ExactSearch, b: int) -> float:
    """The image score of ``patches`` (P, D), exactly as :func:`patchcore.scoring.image_score` gives it from a
    search of every patch: the worst patch is found from the upper bounds that the bank rows ``near`` give."""
    upper = search.pairwise(patches, search.bank.index_select(0, near))
    distance, patch, row = _farthest(patches, upper, search, *_PATCHES)
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
    return max(0.0, _farthest(patches, upper, search, chunk, chunk)[0])
