"""Exact nearest-neighbour distances where an approximate search could change the verdict.

An approximate search (HNSW) returns, for each test patch, a real memory-bank patch: its distance is an upper bound
of the exact nearest distance. The image score depends on the largest patch distance only (eq. 7's ``s*``), so
the patches are searched again exactly, worst-looking first, until the next upper bound is no larger than the
largest exact distance found: no patch left can then be worse, and the maximum equals the exact maximum. A few
patches usually suffice, so this costs a fraction of an exact search of every patch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from patchcore.scoring import ExactSearch

CHUNK = 8


@dataclass
class Reranked:
    """Patch distances (P,) and nearest bank rows (P,), exact for the ``searched`` worst-looking patches."""

    distances: torch.Tensor
    nearest_index: torch.Tensor
    searched: int


def rerank_worst(
    upper: torch.Tensor,
    nearest_index: torch.Tensor,
    patches: torch.Tensor,
    search: ExactSearch,
    cap: int,
) -> Reranked:
    """Replace the upper bounds ``upper`` (P,) of the worst-looking patches by their exact distances.

    ``nearest_index`` (P,) holds the bank row each upper bound was measured to, ``patches`` (P, D) the test
    patches. At most ``cap`` patches are searched (in chunks of ``CHUNK``, one matrix product each); past the cap
    the maximum is still never below the exact one, since every distance kept is exact or an upper bound of it."""
    distances = upper.clone().float()
    index = nearest_index.clone().long()
    order = torch.sort(upper, descending=True, stable=True).indices
    limit = min(max(cap, 1), upper.numel())
    best = float("-inf")
    searched = 0
    while searched < limit and float(upper[order[searched]]) > best:
        chunk = order[searched : min(searched + CHUNK, limit)]
        exact, rows = search.nearest(patches[chunk])
        distances[chunk] = exact[:, 0]
        index[chunk] = rows[:, 0]
        best = max(best, float(exact.max()))
        searched += chunk.numel()
    return Reranked(distances, index, searched)
