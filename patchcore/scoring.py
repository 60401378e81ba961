"""Every scoring formula of the product, in one place.

- patch score: distance from a test patch to its nearest memory-bank patch, cosine (``1 - cos``, what pgvector's
  ``<=>`` computes) or Euclidean (``<->``, PatchCore's own);
- image score: the largest patch score ``s*``, re-weighted as in the paper's eq. 7:
  ``s = (1 - exp d(m_test*, m*) / sum_{m in N_b(m*)} exp d(m_test*, m)) * s*``, where ``m*`` is the nearest
  memory-bank patch of the worst test patch and ``N_b(m*)`` its ``b`` nearest memory-bank neighbours (``m*``
  itself among them); ``b = 1`` leaves ``s*`` unchanged;
- anomaly map: patch scores upsampled bilinearly to the input size, then a Gaussian blur with sigma 4;
- similarity: the score turned into "higher is more normal", so an image is anomalous when its score is above the
  threshold, that is when its similarity is below the similarity of the threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal, Protocol

import torch
import torch.nn.functional as F

Metric = Literal["cosine", "l2"]
METRICS: tuple[Metric, ...] = ("cosine", "l2")
BLUR_SIGMA = 4.0
# The most memory one block of query-to-bank distances takes: queries are searched a block at a time, so a search's
# memory does not grow with the bank (8,192 queries at a time against a 100,000-row bank took 2,993 MiB). 256 MiB was
# also the fastest block measured (docs/results.md, "Memory of a fit").
BLOCK_BYTES = 1 << 28


class ExactSearch:
    """A memory bank made ready for repeated exact nearest-neighbour search, in the metric pgvector uses for the
    same operator. What depends on the bank alone (its norms) is computed once here, not once per batch of queries:
    for 8 queries against bottle's 14,740 x 384 bank, recomputing it was most of the time."""

    def __init__(self, bank: torch.Tensor, metric: Metric) -> None:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose cosine or l2")
        self.bank = bank.float()
        self.metric = metric
        self._matrix = F.normalize(self.bank, dim=1) if metric == "cosine" else self.bank
        self._squared_norms = (self.bank * self.bank).sum(1) if metric == "l2" else None

    @staticmethod
    def copy_bytes(floats: int, metric: Metric) -> int:
        """Bytes the copy of a bank of ``floats`` float32 values takes once made ready: the bank, and for cosine its
        normalised rows beside it (for l2 one norm a row, negligible)."""
        return 4 * floats * (2 if metric == "cosine" else 1)

    @property
    def block_rows(self) -> int:
        """How many queries one block of distances (:data:`BLOCK_BYTES`) holds against this bank."""
        return max(1, BLOCK_BYTES // (4 * max(1, self.bank.shape[0])))

    def distances(self, queries: torch.Tensor) -> torch.Tensor:
        """(Q, M) distances from each query row to each bank row."""
        if self.metric == "cosine":
            return (1.0 - F.normalize(queries.float(), dim=1) @ self._matrix.T).clamp_min_(0)
        q = queries.float()
        d2 = (q * q).sum(1, keepdim=True) - 2 * q @ self._matrix.T + self._squared_norms
        return d2.clamp_min_(0).sqrt_()

    def pairwise(self, queries: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(Q,) distance from each query row to the bank row beside it (``rows`` (Q, D), taken from the bank)."""
        return paired_distance(queries, rows, self.metric)

    def nearest_one(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The nearest bank row of each query: (distances, indices), each (Q,). The matrix product only finds the
        rows; their distances are measured pair by pair (:func:`paired_distance`), of the minima only, not of the
        whole (Q, M) matrix: with the matrix product that halves the time of searching every training patch
        (bottle: 33 s by :meth:`nearest`)."""
        distances, indices = [], []
        step = self.block_rows
        for start in range(0, queries.shape[0], step):
            q = queries[start : start + step].float()
            if self.metric == "cosine":
                index = (F.normalize(q, dim=1) @ self._matrix.T).argmax(1)
            else:
                index = torch.addmm(self._squared_norms, q, self._matrix.T, alpha=-2.0).argmin(1)
            distances.append(self.pairwise(q, self.bank.index_select(0, index)))
            indices.append(index)
        return torch.cat(distances), torch.cat(indices)

    def nearest(self, queries: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact k nearest bank rows of each query: (distances, indices), each (Q, k), nearest first; the rows found
        by the matrix product, their distances measured pair by pair, as :meth:`nearest_one` gives them."""
        k = min(k, self.bank.shape[0])
        distances, indices = [], []
        step = self.block_rows
        for start in range(0, queries.shape[0], step):
            q = queries[start : start + step].float()
            idx = torch.topk(self.distances(q), k, dim=1, largest=False).indices
            values = paired_distance(q[:, None, :], self.bank[idx], self.metric)
            values, order = values.sort(dim=1, stable=True)
            distances.append(values)
            indices.append(idx.gather(1, order))
        return torch.cat(distances), torch.cat(indices)


class BankSearch(Protocol):
    """What scoring asks of a search: the bank in its own order, its metric, each query's nearest row and (eq. 7,
    :func:`image_score`) its ``k`` nearest; :class:`ExactSearch` and :class:`patchcore.clustered.ClusteredSearch`
    answer it alike."""

    bank: torch.Tensor
    metric: Metric

    def nearest_one(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def nearest(self, queries: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]: ...


def paired_distance(queries: torch.Tensor, rows: torch.Tensor, metric: Metric) -> torch.Tensor:
    """(Q,) distance from each query row to the row beside it (``rows`` (Q, D); or (Q, k), queries (Q, 1, D) against
    rows (Q, k, D)), from the pair itself: for l2 the norm of the difference, rounded at the scale of the distance,
    where the expansion ``|q|^2 + |b|^2 - 2 q.b`` that finds the nearest rows in one matrix product rounds at the
    scale of the squared norms (up to 7 float32 epsilons of them measured, 1.3e-4 at a distance of 0.065 on bottle's
    patches). Every distance a search reports is measured here, so that two searches that find the same row report
    the same distance, whatever their order of summation, and as pgvector measures them (the difference too)."""
    queries, rows = queries.float(), rows.float()
    if metric == "cosine":
        return (1.0 - F.cosine_similarity(queries, rows, dim=-1)).clamp_min_(0)
    return (queries - rows).norm(dim=-1)


def nearest(queries: torch.Tensor, bank: torch.Tensor, metric: Metric, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest bank rows of each query: (distances, indices), each (Q, k), nearest first."""
    return ExactSearch(bank, metric).nearest(queries, k)


def reweighted_score(worst_distance: float, other_support_distances: torch.Tensor) -> float:
    """Eq. 7 for the worst test patch: ``worst_distance`` is d(m_test*, m*), ``other_support_distances`` holds
    d(m_test*, m) for the other ``b - 1`` members of N_b(m*)."""
    if other_support_distances.numel() == 0:
        return float(worst_distance)
    # on the support's device: the exact backend keeps its bank, and so the support's distances, on the GPU
    worst = torch.tensor([worst_distance], dtype=torch.float64, device=other_support_distances.device)
    distances = torch.cat([worst, other_support_distances.double()])
    weight = 1.0 - torch.softmax(distances, dim=0)[0]
    return float(weight * worst_distance)


def support_of(bank_index: int, search: BankSearch, b: int) -> torch.Tensor:
    """Indices of N_b(m*) without m* itself: the ``b - 1`` nearest other memory-bank patches of ``bank[bank_index]``."""
    if b <= 1:
        return torch.empty(0, dtype=torch.long)
    _, neighbours = search.nearest(search.bank[bank_index][None], k=b)
    return support_from(bank_index, neighbours[0], b)


def support_from(bank_index: int, neighbours: torch.Tensor, b: int) -> torch.Tensor:
    """N_b(m*) without m* itself, from the ``b`` nearest bank rows of ``bank[bank_index]`` (nearest first), found
    by a search that answered other queries too (:func:`patchcore.rerank.rerank_worst`)."""
    return neighbours[neighbours != bank_index][: b - 1]


def image_score(
    patch_scores: torch.Tensor,
    nearest_index: torch.Tensor,
    patches: torch.Tensor,
    search: BankSearch,
    b: int,
    known: Mapping[int, torch.Tensor] | None = None,
) -> float:
    """Image score of one image from its patch scores (P,), nearest bank index (P,) and features (P, D).

    ``known`` maps bank rows to their ``b`` nearest bank rows, already searched: when m* is one of them, its
    support costs no pass over the memory bank (one pass is about 3 ms on 2 CPU cores for bottle's bank)."""
    worst = int(torch.argmax(patch_scores))
    row = int(nearest_index[worst])
    support = support_from(row, known[row], b) if known and row in known and b > 1 else support_of(row, search, b)
    if support.numel() == 0:
        return reweighted_score(float(patch_scores[worst]), support.float())
    others = paired_distance(patches[worst][None], search.bank[support], search.metric)
    return reweighted_score(float(patch_scores[worst]), others)


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = int(4 * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def anomaly_map(patch_grid: torch.Tensor, size: tuple[int, int], sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """(H, W) patch scores to a ``size`` (height, width) map: bilinear upsampling, then a separable Gaussian blur."""
    upsampled = F.interpolate(patch_grid[None, None].float(), size=tuple(size), mode="bilinear", align_corners=False)
    kernel = _gaussian_kernel(sigma)
    pad = kernel.numel() // 2
    blurred = F.conv2d(F.pad(upsampled, (pad, pad, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    blurred = F.conv2d(F.pad(blurred, (0, 0, pad, pad), mode="reflect"), kernel.view(1, 1, -1, 1))
    return blurred[0, 0]


def similarity(score: float, metric: Metric) -> float:
    """Score as "higher is more normal": the cosine similarity ``1 - d`` for cosine, ``exp(-d)`` for Euclidean."""
    return 1.0 - score if metric == "cosine" else math.exp(-score)
