"""Greedy k-center coreset selection (PatchCore section 3.2), memory-bounded and fast.

The greedy rule is the paper's: project the features to about 128 dimensions with a seeded Gaussian matrix, start
from a seeded random patch, and repeatedly add the patch farthest from everything chosen so far. What makes it fast
is exact pruning by lower bounds of distances, so that a step computes the full distance to the new centre ``c``
only for the few patches it can take. Every patch remembers its nearest chosen centre (its cluster's), at distance
``r_p``; a patch ``p`` of cluster ``j`` can only come closer to ``c`` if ``|c - j| < 2 * r_p`` (triangle inequality),
so only clusters with ``|c - j| < 2 * radius_j`` are looked at (each cluster's patches are kept together), and of
their patches only those with ``r_p > |c - j| / 2``; and since a distance within a subspace bounds the full one from
below, only those whose distance to ``c`` in the 16 principal directions of the projection is below ``r_p`` (the
same bound finds the centres that can be in reach). Each test leaves room for float32 rounding, so the selection
is the naive full scan's, while a step reads a small fraction of the patches (on the 502,816 patches of three sets'
training images at 3%: 66.9 s against 169.9 s with the cluster test alone, the same selection). Memory is the
projection (N x 128 floats), its 16 principal coordinates and a few N-vectors: never an N x N matrix.

On a GPU the pruning does not pay: its bookkeeping needs the host at every step, while a full scan of N x 128
floats takes the GPU microseconds. There the same greedy rule runs as the plain full scan, without a single host
round trip. The projection matrix always comes from the CPU generator, so only floating-point rounding (and the
order among exactly tied distances) can make a GPU's selection differ from the CPU's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from patchcore.scoring import ExactSearch, paired_distance

PROJECTION_DIM = 128
_FULL_SCAN_FRACTION = 0.4
_PROJECTION_CHUNK = 65536
_DISTANCE_BLOCK = 1 << 24  # distances computed at once: 64 MB of float32
_BOUND_DIM = 16  # principal directions that bound the distances between centres from below
_BOUND_SAMPLE = 20_000  # points their directions are estimated from
_ROUNDING = 1e-5  # float32 rounding of a squared distance, relative to the squared norms


def random_projection(
    features: torch.Tensor, dim: int, seed: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """Johnson-Lindenstrauss projection to ``dim`` dimensions (identity when already that small), on ``device``."""
    n, d = features.shape
    device = torch.device(device) if device is not None else features.device
    if d <= dim:
        return features.to(device=device, dtype=torch.float32).contiguous()
    generator = torch.Generator().manual_seed(seed)
    matrix = (torch.randn(d, dim, generator=generator) / math.sqrt(dim)).to(device)
    out = torch.empty(n, dim, device=device)
    for start in range(0, n, _PROJECTION_CHUNK):
        chunk = features[start : start + _PROJECTION_CHUNK].to(device=device, dtype=torch.float32)
        out[start : start + _PROJECTION_CHUNK] = chunk @ matrix
    return out


def coreset_size(n: int, ratio: float) -> int:
    if not 0 < ratio <= 1:
        raise ValueError(f"coreset ratio must be in (0, 1], got {ratio}")
    return min(n, max(1, math.ceil(n * ratio)))


def greedy_coreset(
    features: torch.Tensor,
    ratio: float = 0.1,
    seed: int = 0,
    projection_dim: int = PROJECTION_DIM,
    progress: Callable[[int], None] | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Indices (CPU, in selection order) of ``ceil(ratio * N)`` patches chosen by greedy k-center.

    ``progress`` is called with the number of centres added since the last call; ``device`` defaults to the
    features' own.
    """
    points = random_projection(features, projection_dim, seed, device)
    return greedy_selection(points, coreset_size(features.shape[0], ratio), seed, progress).indices


class Selection(NamedTuple):
    """A greedy k-center selection: ``indices`` (CPU, in selection order) of the chosen points, and for every point
    the position in ``indices`` of its nearest chosen point in the projected space (``owner``, CPU)."""

    indices: torch.Tensor
    owner: torch.Tensor


def greedy_selection(
    points: torch.Tensor, k: int, seed: int = 0, progress: Callable[[int], None] | None = None
) -> Selection:
    """``k`` of the already projected ``points`` chosen by greedy k-center, from a seeded first point, on the points'
    device (pruned on the CPU, full scans elsewhere)."""
    n = points.shape[0]
    first = int(torch.randint(n, (1,), generator=torch.Generator().manual_seed(seed)).item())
    return _greedy(points, (points * points).sum(1), k, _Start.fresh(n, first, points.device), progress)


def greedy_continued(
    points: torch.Tensor, k: int, chosen: torch.Tensor, owner: torch.Tensor, seed: int = 0
) -> Selection:
    """``k`` of the projected ``points`` by greedy k-center, continued from the centres ``chosen`` (positions in
    ``points``, kept first): the next centre is the point farthest from them, exactly as if the rule had chosen them
    itself. ``owner`` gives each point's nearest chosen centre (a position in ``chosen``) or -1 where it is not known;
    those are found here. With nothing chosen it is :func:`greedy_selection` from ``seed``.

    This is how a coreset *without* some images is made at a fraction of a new selection's cost: drop their centres
    from a selection over all the images and let the greedy rule cover again what only those centres covered."""
    if chosen.numel() == 0:
        return greedy_selection(points, k, seed)
    chosen, owner = chosen.to(points.device), owner.to(points.device).clone()
    unknown = torch.nonzero(owner < 0).flatten()
    centres = points.index_select(0, chosen)
    owner[unknown] = nearest_centre(points.index_select(0, unknown), centres)
    squared = (points * points).sum(1)
    centre_sq = squared.index_select(0, chosen)
    nearest = squared - 2 * (points * centres.index_select(0, owner)).sum(1) + centre_sq.index_select(0, owner)
    nearest = nearest.clamp_min_(0).sqrt_().index_fill_(0, chosen, 0)
    return _greedy(points, squared, k, _Start(chosen, nearest, owner, int(torch.argmax(nearest))), None)


def nearest_centre(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """(P,) position of each point's nearest centre (on the points' device), in blocks of at most 2^24 distances, so
    that many points against a large coreset never need a P x K matrix at once."""
    centre_sq = (centres * centres).sum(1)
    step = max(1, _DISTANCE_BLOCK // max(1, centres.shape[0]))
    parts = [
        torch.addmm(centre_sq, points[start : start + step], centres.T, alpha=-2.0).argmin(1)
        for start in range(0, points.shape[0], step)
    ]
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long, device=points.device)


def nearest_centre_near(
    points: torch.Tensor, anchors: torch.Tensor, anchor_of: torch.Tensor, centres: torch.Tensor
) -> torch.Tensor:
    """(P,) position of each point's nearest centre, as :func:`nearest_centre` finds it, for points that each have an
    anchor near them (``anchors[anchor_of[i]]``, not a centre: the centre a point had before its centre was dropped).

    With ``a`` a point's anchor, ``j_a`` the centre nearest to ``a``, ``r = |p - a|`` and ``u = |p - j_a|``, a
    centre ``j`` can only be nearer to ``p`` than ``j_a`` is if ``|a - j| <= r + u`` (triangle inequality). So the
    points of an anchor are matched only against the centres within the largest such reach of it (with room for
    float32 rounding), which on real features is a small fraction of them (the 914 images of three sets at a 10%
    coreset: about 1%; one fold's 48,390 such points in 1.7 s against 11.5 s for the full product, the same
    centres). On the CPU; elsewhere one full product is cheaper than the bookkeeping."""
    if points.device.type != "cpu" or points.shape[0] == 0:
        return nearest_centre(points, centres)
    result = torch.empty(points.shape[0], dtype=torch.long)
    centre_sq = (centres * centres).sum(1)
    largest_sq = float(centre_sq.max())
    used, anchor_of = torch.unique(anchor_of, return_inverse=True)  # anchors without points cost nothing
    anchors = anchors.index_select(0, used)
    order = torch.argsort(anchor_of, stable=True)
    first_point = torch.searchsorted(anchor_of.index_select(0, order), torch.arange(anchors.shape[0] + 1))
    step = max(1, _DISTANCE_BLOCK // max(1, centres.shape[0]))
    for start in range(0, anchors.shape[0], step):
        block = anchors[start : start + step]
        block_sq = (block * block).sum(1)
        between_sq = torch.addmm(centre_sq, block, centres.T, alpha=-2.0).add_(block_sq[:, None])
        own = between_sq.argmin(1)
        lo, hi = int(first_point[start]), int(first_point[start + block.shape[0]])
        members = order[lo:hi]
        mine = anchor_of.index_select(0, members) - start
        near = points.index_select(0, members)
        reach = (near - block.index_select(0, mine)).norm(dim=1) + (near - centres.index_select(0, own[mine])).norm(
            dim=1
        )
        largest = torch.zeros(block.shape[0]).scatter_reduce_(0, mine, reach, reduce="amax")
        limit = largest.square_().add_(_ROUNDING * (block_sq + largest_sq))
        row, candidates = torch.nonzero(between_sq <= limit[:, None]).unbind(1)
        ends = torch.bincount(row, minlength=block.shape[0]).cumsum(0).tolist()
        counts = first_point[start : start + block.shape[0] + 1].diff().tolist()
        taken, begin = lo, 0
        for end, count in zip(ends, counts, strict=True):  # every anchor left has points
            mine_points = order[taken : taken + count]
            near_centres = candidates[begin:end]
            product = torch.addmm(
                centre_sq.index_select(0, near_centres),
                points.index_select(0, mine_points),
                centres.index_select(0, near_centres).T,
                alpha=-2.0,
            )
            result[mine_points] = near_centres[product.argmin(1)]
            taken, begin = taken + count, end
    return result


class _Start(NamedTuple):
    """Where a greedy selection starts: centres already ``chosen`` (positions), each point's distance to its
    ``nearest`` one and that one's position in ``chosen`` (``owner``), and the next centre, ``candidate``."""

    chosen: torch.Tensor
    nearest: torch.Tensor
    owner: torch.Tensor
    candidate: int

    @classmethod
    def fresh(cls, n: int, first: int, device: torch.device) -> _Start:
        """Nothing chosen yet, every point infinitely far, ``first`` the first centre."""
        nothing = torch.empty(0, dtype=torch.long, device=device)
        return cls(nothing, torch.full((n,), math.inf, device=device), nothing.new_zeros(n), first)


def _greedy(
    points: torch.Tensor, squared: torch.Tensor, k: int, start: _Start, progress: Callable[[int], None] | None
) -> Selection:
    if start.chosen.numel() > k:
        raise ValueError(f"{start.chosen.numel()} centres already chosen, more than the {k} asked for")
    if points.device.type == "cpu":
        return _pruned_greedy(points, squared, k, start, progress)
    return _full_scan_greedy(points, squared, k, start, progress)


def _full_scan_greedy(
    points: torch.Tensor, squared: torch.Tensor, k: int, start: _Start, progress: Callable[[int], None] | None
) -> Selection:
    """The textbook greedy scan, written so that no step waits for the device (the GPU path)."""
    device = points.device
    t0 = start.chosen.numel()
    selected = torch.empty(k, dtype=torch.long, device=device)
    selected[:t0] = start.chosen
    nearest, owner = start.nearest.clone(), start.owner.clone()
    candidate = torch.tensor([start.candidate], device=device)
    for t in range(t0, k):
        selected[t : t + 1] = candidate
        centre = points.index_select(0, candidate)[0]
        distance = (squared - 2 * (points @ centre) + squared.index_select(0, candidate)).clamp_min_(0).sqrt_()
        owner.masked_fill_(distance < nearest, t)
        torch.minimum(nearest, distance, out=nearest)
        nearest.index_fill_(0, candidate, 0)
        candidate = torch.argmax(nearest).view(1)
        if progress is not None:
            progress(1)
    return Selection(selected.cpu(), owner.cpu())


def _pruned_greedy(
    points: torch.Tensor, squared: torch.Tensor, k: int, start: _Start, progress: Callable[[int], None] | None
) -> Selection:
    """Greedy k-center with triangle-inequality pruning (the CPU path): late steps touch few patches, and read only
    those (each cluster's points are kept together, :class:`_Members`) and the few centres that can be in reach.

    What a test compares is kept ready, so that a step's passes are few: for each centre, its key of the subspace
    test; for each point, its keys of the half-distance and subspace tests (they change only when it moves). The
    centres' principal coordinates are held transposed (a row per direction): their product with a new centre's
    took 81 us at 60,000 centres against 172 us a row per centre (2 cores). A late step is many small operations
    on a few hundred or thousand points, so the bookkeeping is numpy's, on the same memory (an operation costs it
    about a microsecond, torch several); the products stay torch's (numpy's BLAS threads and torch's contend for
    the cores: 8.7 ms interleaved; and a distance is so computed exactly as the textbook scan computes it), and so do
    the gathers of rows (torch's index_select took a half to a quarter of numpy's time on 3,000-30,000 rows)."""
    n = points.shape[0]
    t0 = start.chosen.numel()
    points = points.contiguous()
    every_point, squared_np = points.numpy(), squared.contiguous().numpy()
    selected = np.empty(k, dtype=np.int64)
    selected[:t0] = start.chosen.numpy()
    centres = np.empty((k, points.shape[1]), dtype=every_point.dtype)
    centres[:t0] = every_point[selected[:t0]]
    centre_sq = np.empty(k, dtype=squared_np.dtype)
    centre_sq[:t0] = squared_np[selected[:t0]]
    nearest, owner = start.nearest.numpy().copy(), start.owner.numpy().copy()
    radii = np.zeros(k, dtype=nearest.dtype)
    farthest = np.zeros(k, dtype=np.int64)
    everything = np.arange(n)
    members = _Members(owner, t0, k)
    basis = _principal_basis(points)
    points_low = points @ basis
    low = np.empty((basis.shape[1], k), dtype=every_point.dtype)  # the centres' principal coordinates, a column each
    low[:, :t0] = (torch.from_numpy(centres[:t0]) @ basis).T.numpy()
    low_sq = np.empty(k, dtype=every_point.dtype)
    low_sq[:t0] = np.square(low[:, :t0]).sum(0)
    # a centre j can be in reach of a new centre c only if  key_j - 2 <low_j, low_c>  <  rho |c|^2 - |low_c|^2,  with
    # key_j = |low_j|^2 - 4 r_j^2 - rho |j|^2: the subspace bound |low_j - low_c|^2 < 4 r_j^2 + rho (|j|^2 + |c|^2)
    centre_key = np.empty(k, dtype=every_point.dtype)
    # a point p of cluster j can move to c only if  half_key_p + 8 rho |c|^2 > |c - j|^2,  and then only if
    # |low_p - low_c|^2 < shadow_key_p + 8 rho |c|^2,  with slack_p = 8 rho (|p|^2 + |j|^2) in both keys
    half_key, shadow_key = np.empty(n, dtype=every_point.dtype), np.empty(n, dtype=every_point.dtype)
    if t0:
        _refresh_radii(everything, nearest, owner, radii, farthest)
        _rekey_centres(np.arange(t0), radii, low_sq, centre_sq, centre_key)
        _rekey_points(everything, nearest, squared_np, centre_sq[owner], half_key, shadow_key)
    far_sq = np.full(k, np.inf, dtype=every_point.dtype)  # each cluster in reach: its squared distance to c
    low_torch, centres_torch = torch.from_numpy(low), torch.from_numpy(centres)
    owner_t, half_key_t, far_sq_t = torch.from_numpy(owner), torch.from_numpy(half_key), torch.from_numpy(far_sq)
    candidate = start.candidate
    for t in range(t0, k):
        selected[t] = candidate
        centres[t] = every_point[candidate]
        centre = centres_torch[t]
        centre_sq[t] = squared_np[candidate]
        centre_low = centre @ basis
        low[:, t] = centre_low.numpy()
        low_sq[t] = np.square(low[:, t]).sum()
        centre_key[t] = low_sq[t] - _ROUNDING * centre_sq[t]
        room = 8 * _ROUNDING * float(centre_sq[t])
        index = None  # the first centre takes every point
        if t > 0:
            # Only a cluster whose centre lies within twice its radius of the new centre can lose points to it. Their
            # distance in the principal subspace bounds it from below (with room for rounding), so the exact distance
            # is computed only for the few centres that bound lets through.
            bound = centre_key[:t] - 2 * (low_torch[:, t] @ low_torch[:, :t]).numpy()
            near = np.flatnonzero(bound < _ROUNDING * float(centre_sq[t]) - float(low_sq[t]))
            near_centres = centres_torch.index_select(0, torch.from_numpy(near))
            between_sq = centre_sq[near] - 2 * (near_centres @ centre).numpy() + centre_sq[t]
            reach = between_sq < 4 * np.square(radii[near])
            in_reach = near[reach]
            far_sq[in_reach] = between_sq[reach]
            index = members.of(in_reach, owner, _FULL_SCAN_FRACTION * n)
            index = everything if index is None else index
            # And of such a cluster's points, only one farther from its centre than half the new centre's distance.
            at = torch.from_numpy(index)
            far_of = far_sq_t.index_select(0, owner_t.index_select(0, at))
            index = index[(half_key_t.index_select(0, at) + room > far_of).numpy()]
            far_sq[in_reach] = np.inf
            # And of those, only one that is nearer to the new centre than its own in the principal subspace too.
            shadow_sq = (points_low.index_select(0, torch.from_numpy(index)) - centre_low).square_().sum(1).numpy()
            index = index[shadow_sq < shadow_key[index] + room]
        moved, losers = _assign(points, squared_np, centre, centre_sq[t], index, t, nearest, owner)
        members.add(t, moved, owner)
        nearest[candidate] = 0
        _rekey_points(moved, nearest, squared_np, np.full(moved.size, centre_sq[t]), half_key, shadow_key)
        # Only the new cluster and those that lost their farthest point to it have a new radius (one that lost only
        # nearer points keeps its farthest, so its radius): their points are read again (a cluster keeps its centre,
        # so each of them still has one), unless they are most of all points.
        kept = None if t == 0 else members.of(losers[farthest[losers] == moved], owner, _FULL_SCAN_FRACTION * n)
        refreshed = _refresh_radii(
            everything if kept is None else np.concatenate([kept, moved]), nearest, owner, radii, farthest
        )
        _rekey_centres(refreshed, radii, low_sq, centre_sq, centre_key)
        candidate = int(farthest[int(radii[: t + 1].argmax())])
        if progress is not None:
            progress(1)
    return Selection(torch.from_numpy(selected), torch.from_numpy(owner))


def _rekey_centres(
    clusters: np.ndarray, radii: np.ndarray, low_sq: np.ndarray, centre_sq: np.ndarray, key: np.ndarray
) -> None:
    """The subspace test's key of ``clusters`` (their radius changed): ``|low_j|^2 - 4 r_j^2 - rho |j|^2``."""
    r = radii[clusters]
    key[clusters] = low_sq[clusters] - 4 * r * r - _ROUNDING * centre_sq[clusters]


def _rekey_points(
    index: np.ndarray,
    nearest: np.ndarray,
    squared: np.ndarray,
    owner_sq: np.ndarray,
    half_key: np.ndarray,
    shadow_key: np.ndarray,
) -> None:
    """The half-distance and subspace tests' keys of the points ``index`` (they moved; ``owner_sq``: the squared norm
    of each one's centre): ``4 r_p^2 + slack_p`` and ``r_p^2 + slack_p``."""
    near_sq = np.square(nearest[index])
    slack = 8 * _ROUNDING * (squared[index] + owner_sq)
    half_key[index] = 4 * near_sq + slack
    shadow_key[index] = near_sq + slack


class _Members:
    """The points of each cluster, so that a step reads the clusters in reach and not an owner array of every point.

    One flat buffer of segments, a segment per cluster: written when the buffer is built from the owners (sorted by
    cluster) or, for a cluster made since, when it is made (the points it took). Points only ever move to the newest
    cluster, so a point is always in the segment of its current cluster; one that moved on stays in its old segment
    and is dropped when that is read (its owner is another cluster). The buffer is built again when full."""

    def __init__(self, owner: np.ndarray, clusters: int, k: int) -> None:
        self.buffer = np.empty(2 * owner.size, dtype=np.int64)
        self.start = np.zeros(k, dtype=np.int64)
        self.length = np.zeros(k, dtype=np.int64)
        self._build(owner, clusters)

    def _build(self, owner: np.ndarray, clusters: int) -> None:
        n = owner.size
        self.buffer[:n] = np.argsort(owner, kind="stable")
        counts = np.bincount(owner, minlength=clusters)[:clusters]
        self.length[:clusters] = counts
        self.start[:clusters] = counts.cumsum() - counts
        self.fill = n

    def add(self, cluster: int, moved: np.ndarray, owner: np.ndarray) -> None:
        """Cluster ``cluster`` was made and took the points ``moved`` (``owner`` already says so)."""
        if self.fill + moved.size > self.buffer.size:
            self._build(owner, cluster + 1)
            return
        self.buffer[self.fill : self.fill + moved.size] = moved
        self.start[cluster], self.length[cluster] = self.fill, moved.size
        self.fill += moved.size

    def of(self, clusters: np.ndarray, owner: np.ndarray, most: float) -> np.ndarray | None:
        """The points of ``clusters``, or None when their segments hold more than ``most`` (then every point is
        tested: one pass over all is cheaper than gathering most of them)."""
        lengths = self.length[clusters]
        total = int(lengths.sum())
        if total > most:
            return None
        ends = lengths.cumsum()
        offset = np.repeat(self.start[clusters] - (ends - lengths), lengths)
        points = self.buffer[np.arange(total) + offset]
        return points[owner[points] == np.repeat(clusters, lengths)]


def _principal_basis(points: torch.Tensor) -> torch.Tensor:
    """(d, m) orthonormal basis of the ``m`` principal directions of a seeded sample of ``points``: a distance
    within its subspace bounds the full distance from below, and tightly where the points vary most (bottle's
    projected patches: 87% of their variance in 16 of 128 directions)."""
    n, d = points.shape
    if d <= _BOUND_DIM:
        return torch.eye(d)
    sample = points.index_select(0, torch.randperm(n, generator=torch.Generator().manual_seed(0))[:_BOUND_SAMPLE])
    directions = torch.linalg.svd(sample - sample.mean(0), full_matrices=False).Vh
    return directions[:_BOUND_DIM].T.contiguous()


def _assign(
    points: torch.Tensor,
    squared: np.ndarray,
    centre: torch.Tensor,
    centre_sq: np.float32,
    index: np.ndarray | None,
    t: int,
    nearest: np.ndarray,
    owner: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Give the patches of ``index`` (``None``: all) closer to centre ``t`` than to their own centre to centre ``t``;
    returns them and the clusters they came from. The distance is the textbook scan's, to the last bit."""
    if index is None:
        distance = squared - 2 * (points @ centre).numpy() + centre_sq
        current = nearest
        index = np.arange(points.shape[0])
    else:
        rows = points.index_select(0, torch.from_numpy(index))
        distance = squared[index] - 2 * (rows @ centre).numpy() + centre_sq
        current = nearest[index]
    distance = np.sqrt(np.maximum(distance, 0, out=distance), out=distance)
    closer = distance < current
    moved = index[closer]
    losers = owner[moved]
    nearest[moved] = distance[closer]
    owner[moved] = t
    return moved, losers


def _refresh_radii(
    index: np.ndarray, nearest: np.ndarray, owner: np.ndarray, radii: np.ndarray, farthest: np.ndarray
) -> np.ndarray:
    """Recompute radius and farthest patch of every cluster that ``index`` covers (it covers them whole); returns
    the cluster of each point of ``index``."""
    distance = nearest[index]
    clusters = owner[index]
    radii[clusters] = 0
    np.maximum.at(radii, clusters, distance)
    at_radius = distance == radii[clusters]
    farthest[clusters] = -1
    np.maximum.at(farthest, clusters[at_radius], index[at_radius])
    return clusters


def coverage_radius(features: torch.Tensor, coreset: torch.Tensor, chunk: int = 4096) -> float:
    """k-center radius: the largest distance from any feature to its nearest coreset member (in full space)."""
    bank = features[coreset].float()
    bank_sq = (bank * bank).sum(1)
    worst = 0.0
    for start in range(0, features.shape[0], chunk):
        block = features[start : start + chunk].float()
        d2 = (block * block).sum(1, keepdim=True) - 2 * block @ bank.T + bank_sq
        worst = max(worst, float(d2.min(1).values.clamp_min(0).max().sqrt()))
    return worst


def extend_coreset(candidates: torch.Tensor, bank: ExactSearch, radius: float) -> torch.Tensor:
    """Indices of the ``candidates`` (N, D) to add to a memory bank so that every candidate lies within ``radius``
    of it, chosen by the same greedy k-center rule as the fit, in the full space and the bank's own metric.

    A candidate already within ``radius`` of the bank (the fit's coreset radius: the largest distance from a
    training patch to its nearest bank patch) is covered and adds nothing; of the rest, the farthest is added first
    and covers its neighbours. The bank so stays a coreset of the same radius and grows only with what is new: a
    second copy of an added image adds nothing."""
    if candidates.shape[0] == 0 or bank.bank.shape[0] == 0:
        return torch.arange(candidates.shape[0])
    nearest = bank.nearest(candidates)[0][:, 0].clone()
    chosen: list[int] = []
    while True:
        farthest = int(torch.argmax(nearest))
        if float(nearest[farthest]) <= radius:
            return torch.tensor(chosen, dtype=torch.long)
        chosen.append(farthest)
        added = paired_distance(candidates[farthest][None], candidates, bank.metric)
        torch.minimum(nearest, added, out=nearest)
        nearest[farthest] = 0
