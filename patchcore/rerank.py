"""Exact nearest-neighbour distances where an approximate search could change the verdict.

An approximate search (HNSW) returns, for each test patch, a real memory-bank patch: its distance is an upper bound
of the exact nearest distance. The image score depends on the largest patch distance only (eq. 7's ``s*``), so
the patches are searched again exactly, worst-looking first, until the next upper bound is no larger than the
largest exact distance found: no patch left can then be worse, and the maximum equals the exact maximum. A few
patches usually suffice, so this costs a fraction of an exact search of every patch.

Each pass over the memory bank also asks for the ``b`` nearest bank rows of the rows HNSW gave the chunk's patches:
the worst patch's nearest bank row m* is usually one of them (bottle 64 of 83 test images, bsdata 84 of 92, screws
97 of 100), and eq. 7 needs exactly its neighbours, so the score then needs no pass of its own. A pass is bound by
reading the bank (bottle: 22.6 MB, about 3 ms on 2 CPU cores), not by the few rows it answers.

An anomalous image's defect regions (:mod:`patchcore.regions`) are its cells above the threshold, grouped where they
touch. An overestimate can put a cell above it that is not, so the cells above it are searched again within what
the worst patch's search left of the cap (:func:`settle_regions`): all of them where that leaves room, and the
regions are then the exact model's; else those of each region that holds no exact distance yet, so that HNSW alone
makes no region, while the cells of a region proven by an exact distance stay as HNSW gave them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from patchcore.care import spread
from patchcore.regions import groups
from patchcore.scoring import ExactSearch

CHUNK = 8


@dataclass
class Reranked:
    """Patch distances (P,) and nearest bank rows (P,), exact for the ``searched`` patches marked in ``exact``
    (P,; ``None`` where every distance is exact, as the exact backend's are); ``neighbours`` maps bank rows to
    their nearest bank rows (nearest first), found on the way. ``complete``: the largest distance is the exact one
    (False when the cap stopped the search first: it may then be too large)."""

    distances: torch.Tensor
    nearest_index: torch.Tensor
    searched: int
    neighbours: dict[int, torch.Tensor] = field(default_factory=dict)
    complete: bool = True
    exact: torch.Tensor | None = None

    def spread(self, cells: torch.Tensor | None, total: int) -> Reranked:
        """These distances of a care area's ``cells`` (:func:`patchcore.care.inspected`) over the whole grid of
        ``total`` cells: the others at distance 0, exact, their nearest row any (none is ever an image's worst, above
        a threshold, or searched again); itself where every cell was searched."""
        if cells is None:
            return self
        exact = None if self.exact is None else spread(self.exact, cells, total, outside=True)
        return Reranked(
            spread(self.distances, cells, total), spread(self.nearest_index, cells, total), self.searched,
            self.neighbours, self.complete, exact,
        )  # fmt: skip


def rerank_worst(
    upper: torch.Tensor,
    nearest_index: torch.Tensor,
    patches: torch.Tensor,
    search: ExactSearch,
    cap: int,
    neighbours: int = 1,
) -> Reranked:
    """Replace the upper bounds ``upper`` (P,) of the worst-looking patches by their exact distances.

    ``nearest_index`` (P,) holds the bank row each upper bound was measured to, ``patches`` (P, D) the test
    patches. At most ``cap`` patches are searched (in chunks of ``CHUNK``, one matrix product each); past the cap
    the maximum is still never below the exact one, since every distance kept is exact or an upper bound of it.
    With ``neighbours`` > 1 (eq. 7's ``b``), each chunk also finds the ``neighbours`` nearest bank rows of the rows
    ``nearest_index`` gave its patches, in the same pass."""
    distances = upper.clone().float()
    index = nearest_index.clone().long()
    order = torch.sort(upper, descending=True, stable=True).indices
    limit = min(max(cap, 1), upper.numel())
    best = float("-inf")
    searched = 0
    exact_rows = torch.zeros(upper.numel(), dtype=torch.bool)
    found: dict[int, torch.Tensor] = {}
    while searched < limit and float(upper[order[searched]]) > best:
        chunk = order[searched : min(searched + CHUNK, limit)]
        guesses = nearest_index[chunk].long().unique() if neighbours > 1 else chunk[:0]
        exact, rows = search.nearest(torch.cat([patches[chunk].float(), search.bank[guesses]]), k=neighbours)
        exact, rows, guessed = exact[: chunk.numel()], rows[: chunk.numel()], rows[chunk.numel() :]
        distances[chunk] = exact[:, 0]
        index[chunk] = rows[:, 0]
        exact_rows[chunk] = True
        found.update(zip(guesses.tolist(), guessed, strict=True))
        best = max(best, float(exact[:, 0].max()))
        searched += chunk.numel()
    complete = searched == upper.numel() or float(upper[order[searched]]) <= best
    return Reranked(distances, index, searched, found, complete, exact_rows)


def settle_regions(
    reranked: Reranked, patches: torch.Tensor, search: ExactSearch, threshold: float, shape: tuple[int, int], cap: int
) -> int:
    """Search exactly, in place and in one pass, the cells (of the ``shape`` grid) above ``threshold`` that hold no
    exact distance yet, within what is left of ``cap``; returns how many were searched. Where what is left covers
    them all, every cell above the threshold is then exact, and so are the regions (a cell below it by HNSW is below
    it exactly too). Where it does not, the cells of each region (cells above it, touching) that holds no exact
    distance yet come first. An exact distance is never larger than HNSW's, so a searched cell can only leave the
    regions."""
    exact = reranked.exact
    if exact is None:  # every distance exact: every region is proven
        return 0
    above = (reranked.distances > threshold).reshape(shape).cpu().numpy()
    searched = exact.reshape(shape).cpu().numpy()
    room = max(cap - reranked.searched, 0)
    pending = np.flatnonzero(above & ~searched)
    if pending.size > room:
        labelled, _ = groups(above)
        proven = np.unique(labelled[searched & above])
        pending = np.flatnonzero(above & ~np.isin(labelled, proven))[:room]
    if pending.size == 0:
        return 0
    cells = torch.from_numpy(pending).to(reranked.distances.device)
    distances, rows = search.nearest(patches[cells].float())
    reranked.distances[cells] = distances[:, 0]
    reranked.nearest_index[cells] = rows[:, 0]
    exact[cells] = True
    reranked.searched += cells.numel()
    return cells.numel()
