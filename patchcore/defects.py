"""Which known defect an anomalous image shows: the cells that show a defect, and the vote of their neighbours.

A labelled example contributes the cells of its patch grid that its mask covers (a quarter of the cell or more; the
most covered cell when the defect is thinner than that), or without a mask its most anomalous cells by the model.
An anomalous query asks about its most anomalous cells: each cell whose nearest known defect patch is nearer than
its nearest good patch votes for that defect's type. The type with most votes wins; its confidence is the share of
the asked cells that voted for it, so a defect unlike anything in the library gets no type (``None``), not a guess.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from patchcore.scoring import Metric, similarity

MASK_COVER = 0.25
EXAMPLE_CELLS = 32  # most anomalous cells kept of an example without a mask
QUERY_CELLS = 8  # most anomalous cells of a query that ask the library
NEIGHBOURS = 5  # known defect patches fetched per asked cell
NEAREST_EXAMPLES = 5


def cells_from_mask(mask: np.ndarray, grid: tuple[int, int]) -> list[tuple[int, int]]:
    """Grid cells (row, col) covered by a (H, W) boolean mask in the view's geometry."""
    if not mask.any():
        raise ValueError("the mask marks no defect pixel (white, above 127, on black)")
    cover = F.adaptive_avg_pool2d(torch.from_numpy(mask.astype(np.float32))[None, None], grid)[0, 0]
    rows, cols = torch.nonzero(cover >= MASK_COVER, as_tuple=True)
    if rows.numel() == 0:
        best = int(torch.argmax(cover))
        return [(best // grid[1], best % grid[1])]
    return list(zip(rows.tolist(), cols.tolist(), strict=True))


def anomalous_cells(patch_scores: torch.Tensor, threshold: float, limit: int) -> list[tuple[int, int]]:
    """The (row, col) of the ``limit`` most anomalous cells of an (H, W) grid scoring above ``threshold``, worst
    first; the worst cell alone when none does."""
    flat = patch_scores.flatten()
    order = torch.argsort(flat, descending=True)[:limit]
    keep = [int(i) for i in order if float(flat[i]) > threshold] or [int(order[0])]
    width = patch_scores.shape[1]
    return [(i // width, i % width) for i in keep]


@dataclass(frozen=True)
class Neighbour:
    """A known defect patch near asked cell ``query`` (an index into the asked cells)."""

    query: int
    example_id: int
    defect_type: str
    file_name: str
    distance: float


@dataclass
class DefectVerdict:
    """The most likely known defect type (``None``: the library is empty or nothing in it is near), the share of
    asked cells that voted for it, and the closest known examples."""

    defect_type: str | None
    confidence: float
    nearest: list[dict]


def classify(normal_distances: Sequence[float], neighbours: Sequence[Neighbour], metric: Metric) -> DefectVerdict:
    """The vote of the asked cells (``normal_distances``: each cell's distance to its nearest good patch)."""
    votes: Counter[str] = Counter()
    closest: dict[int, float] = defaultdict(lambda: float("inf"))
    by_query: dict[int, Neighbour] = {}
    facts: dict[int, Neighbour] = {}
    for n in neighbours:
        if n.query not in by_query or n.distance < by_query[n.query].distance:
            by_query[n.query] = n
        closest[n.example_id] = min(closest[n.example_id], n.distance)
        facts.setdefault(n.example_id, n)
    spread: dict[str, float] = defaultdict(float)
    for query, n in by_query.items():
        if n.distance < normal_distances[query]:
            votes[n.defect_type] += 1
            spread[n.defect_type] += n.distance
    nearest = [
        {
            "defect_id": example_id,
            "defect_type": facts[example_id].defect_type,
            "file_name": facts[example_id].file_name,
            "distance": distance,
            "similarity": similarity(distance, metric),
        }
        for example_id, distance in sorted(closest.items(), key=lambda item: item[1])[:NEAREST_EXAMPLES]
    ]
    if not votes:
        return DefectVerdict(None, 0.0, nearest)
    best = max(votes, key=lambda t: (votes[t], -spread[t]))  # a tie goes to the nearer type
    return DefectVerdict(best, votes[best] / max(len(normal_distances), 1), nearest)
