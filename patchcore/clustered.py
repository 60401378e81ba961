"""Exact nearest memory-bank rows on a CPU without measuring every row: the bank in clusters, pruned by the triangle
inequality.

A query ``q`` cannot be nearer than ``|q - c| - r`` to any row of a cluster with centre ``c`` and radius ``r`` (the
farthest member's distance), so once some row lies at ``u`` from ``q``, every cluster whose bound exceeds ``u`` can
be skipped unread. Each query is first measured against every row of its nearest cluster (which gives ``u``), then
against the rows of the clusters whose bound lies below ``u``: the nearest row of the whole bank, exactly, whatever
the clusters. On bottle's 14,740 x 384 memory bank the 784 patches of a test image read about 13% of the rows (61
clusters) and take 15-18 ms on 2 CPU cores against 65-74 ms for every row (``ExactSearch.nearest_one``), the same rows
found; on the ball screws' and the screws' banks of that size they read more, and HNSW is the faster there
(docs/search.md). The clusters only decide what is read, never what is found, so a poor clustering costs time,
not correctness. On an accelerator one matrix product of every row is faster (no gathers); this is the CPU's search.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from patchcore.scoring import BankSearch, ExactSearch, Metric, paired_distance

FIT_ROWS = 16_384  # rows the centres are fitted on (a seeded sample of a larger bank): enough to place 256 centres
ITERATIONS = 8  # Lloyd's iterations: the clusters need only be compact, not converged
MOST_CLUSTERS = 256
SLACK = 1e-3  # relative: float rounding of the expanded distances must never prune the nearest row
EVERY_ROW_FLOATS = 1 << 20  # a bank this small (floats) is searched in one product of every row on a CPU


def cpu_search(bank: torch.Tensor, metric: Metric) -> BankSearch:
    """The exact search of ``bank`` on a CPU: one product of every row for a bank of at most
    :data:`EVERY_ROW_FLOATS` (bottle's 1% coreset, 1,474 rows: /query p50 33.2 and 32.5 ms against 34.6 and 33.3 in
    clusters, 4 clients 98.4 and 97.6 against 104.7 and 103.2), clusters above it (docs/search.md)."""
    return ExactSearch(bank, metric) if bank.numel() <= EVERY_ROW_FLOATS else ClusteredSearch(bank, metric)


def cluster_count(rows: int) -> int:
    """Clusters for a bank of ``rows``: about sqrt(rows) / 2 (61 for bottle's 14,740, where 48-128 measured alike:
    more clusters prune more rows but cost a small product each), at most :data:`MOST_CLUSTERS`."""
    return max(1, min(MOST_CLUSTERS, round(math.sqrt(rows) / 2)))


def _squared(queries: torch.Tensor, rows: torch.Tensor, row_norms: torch.Tensor) -> torch.Tensor:
    """(Q, R) squared Euclidean distances less each query's own ``|q|^2``: ``|r|^2 - 2 q.r`` (one matrix product;
    a query's nearest rows are the same, and its norm is added to the minima alone)."""
    return torch.addmm(row_norms, queries, rows.T, alpha=-2.0)


class ClusteredSearch:
    """A memory bank sorted by cluster, for repeated exact nearest-row search in ``metric`` (cosine: Euclidean on the
    normalised rows, whose order is the cosine distance's, ``1 - cos = |a - b|^2 / 2`` for unit vectors)."""

    def __init__(self, bank: torch.Tensor, metric: Metric, seed: int = 0) -> None:
        self.bank = bank.float()  # in the bank's own order, as the callers index it (no copy of a float bank)
        self.metric = metric
        rows = self.bank
        if metric == "cosine":
            rows = F.normalize(rows, dim=1)
        norms = (rows * rows).sum(1)
        generator = torch.Generator().manual_seed(seed)
        count = cluster_count(rows.shape[0])
        sample = rows[torch.randperm(rows.shape[0], generator=generator)[:FIT_ROWS]]
        centres = sample[torch.randperm(sample.shape[0], generator=generator)[:count]].clone()
        for _ in range(ITERATIONS):
            owner = _squared(sample, centres, (centres * centres).sum(1)).argmin(1)
            sums = torch.zeros_like(centres).index_add_(0, owner, sample)
            members = torch.bincount(owner, minlength=centres.shape[0])
            filled = members > 0
            centres[filled] = sums[filled] / members[filled, None].float()
        centre_norms = (centres * centres).sum(1)
        owner = torch.cat([
            _squared(rows[start : start + FIT_ROWS], centres, centre_norms).argmin(1)
            for start in range(0, rows.shape[0], FIT_ROWS)
        ])  # fmt: skip
        used, owner = torch.unique(owner, return_inverse=True)  # an empty cluster would be a product of nothing
        self.centres = centres[used]
        self.order = torch.argsort(owner, stable=True)
        self.rows = rows[self.order].contiguous()
        self.norms = norms[self.order]
        members = torch.bincount(owner, minlength=used.shape[0])
        self.starts = [0, *torch.cumsum(members, 0).tolist()]
        to_centre = (self.rows - self.centres[owner[self.order]]).norm(dim=1)
        self.radius = torch.zeros(used.shape[0]).scatter_reduce_(0, owner[self.order], to_centre, "amax")
        self.centre_norms = (self.centres * self.centres).sum(1)

    def _measure(
        self,
        queries: torch.Tensor,
        asked: torch.Tensor,
        clusters: torch.Tensor,
        best: torch.Tensor,
        found: torch.Tensor,
    ) -> None:
        """Each (query ``asked[i]``, cluster ``clusters[i]``) pair measured, row by row, the cluster's queries in one
        product; ``best`` (squared distances less the query's own norm) and ``found`` (positions in the sorted bank)
        keep each query's nearest."""
        by_cluster = torch.argsort(clusters, stable=True)
        asked, clusters = asked[by_cluster], clusters[by_cluster]
        names, counts = torch.unique_consecutive(clusters, return_counts=True)
        who, nearest, where = [], [], []
        start = 0
        for cluster, count in zip(names.tolist(), counts.tolist(), strict=True):
            these = asked[start : start + count]
            start += count
            first, last = self.starts[cluster], self.starts[cluster + 1]
            value, index = _squared(queries[these], self.rows[first:last], self.norms[first:last]).min(1)
            who.append(these)
            nearest.append(value)
            where.append(index + first)
        who_, nearest_, where_ = torch.cat(who), torch.cat(nearest), torch.cat(where)
        best.scatter_reduce_(0, who_, nearest_, "amin")
        won = nearest_ <= best[who_]
        found[who_[won]] = where_[won]

    def nearest_one(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The nearest bank row of each query, exactly: (distances in the metric, indices into the bank), each (Q,),
        as :meth:`patchcore.scoring.ExactSearch.nearest_one` gives them."""
        raw = queries.float()
        queries = F.normalize(raw, dim=1) if self.metric == "cosine" else raw
        count = queries.shape[0]
        own_norms = (queries * queries).sum(1)
        to_centres = (_squared(queries, self.centres, self.centre_norms) + own_norms[:, None]).clamp_min_(0).sqrt_()
        own = to_centres.argmin(1)
        best = torch.full((count,), math.inf)
        found = torch.zeros(count, dtype=torch.long)
        everyone = torch.arange(count)
        self._measure(queries, everyone, own, best, found)
        reach = (best + own_norms).clamp_min_(0).sqrt_() * (1 + SLACK) + SLACK
        bound = to_centres - self.radius
        bound[everyone, own] = math.inf  # read already
        asked, clusters = torch.nonzero(bound < reach[:, None], as_tuple=True)
        if asked.numel():
            self._measure(queries, asked, clusters, best, found)
        rows = self.order[found]
        return paired_distance(raw, self.bank.index_select(0, rows), self.metric), rows

    def nearest(self, queries: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact ``k`` nearest bank rows of each query: (distances, indices), each (Q, k), nearest first, as
        :meth:`patchcore.scoring.ExactSearch.nearest` gives them. Clusters are read nearest bound first until the
        next bound lies beyond the ``k``-th nearest row found (eq. 7's support: one query, a few clusters)."""
        k = min(k, self.rows.shape[0])
        found_distances, found_indices = [], []
        for raw in queries.float():
            query = (F.normalize(raw, dim=0) if self.metric == "cosine" else raw)[None]
            own_norm = (query * query).sum()
            to_centres = (_squared(query, self.centres, self.centre_norms)[0] + own_norm).clamp_min_(0).sqrt_()
            bounds = to_centres - self.radius
            best = torch.empty(0)
            where = torch.empty(0, dtype=torch.long)
            for cluster in torch.argsort(bounds).tolist():
                if (
                    best.numel() == k
                    and float(bounds[cluster]) > float(best[-1].clamp_min(0).sqrt()) * (1 + SLACK) + SLACK
                ):
                    break
                first, last = self.starts[cluster], self.starts[cluster + 1]
                measured = _squared(query, self.rows[first:last], self.norms[first:last])[0] + own_norm
                best, order = torch.cat([best, measured]).sort()
                where = torch.cat([where, torch.arange(first, last)])[order]
                best, where = best[:k], where[:k]
            rows = self.order[where]
            distances, order = paired_distance(raw[None], self.bank[rows], self.metric).sort(stable=True)
            found_distances.append(distances)
            found_indices.append(rows[order])
        return torch.stack(found_distances), torch.stack(found_indices)
