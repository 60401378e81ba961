"""Detection and segmentation metrics of the MVTec AD protocol, exact (no threshold sampling).

Pixel metrics take one map and one mask per image, each at its image's own size (a category's images may differ in
size): the pixels of all images are pooled, as the protocol pools them for images of one size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def pooled(arrays: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Every value of an array, or of a sequence of arrays of any shapes, in one flat array."""
    if isinstance(arrays, np.ndarray):
        return arrays.ravel()
    return np.concatenate([np.ravel(a) for a in arrays]) if len(arrays) else np.empty(0)


def _ranked(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(true, false) positives above each distinct score, from the highest: tied scores move together (no
    optimistic order)."""
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    return np.cumsum(labels)[last_of_tie], np.cumsum(~labels)[last_of_tie]


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct score, from the highest; tied scores move together (no optimistic order)."""
    scores = pooled(scores).astype(np.float64)
    labels = pooled(labels).astype(bool)
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        raise ValueError("ROC needs both normal and anomalous samples")
    tp, fp = _ranked(scores, labels)
    return np.r_[0.0, fp / negatives], np.r_[0.0, tp / positives]


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    fpr, tpr = roc_curve(scores, labels)
    return float(np.trapezoid(tpr, fpr))


def best_f1(scores: np.ndarray | Sequence[np.ndarray], labels: np.ndarray | Sequence[np.ndarray]) -> float:
    """The largest F1 any one threshold reaches on the pooled scores (every distinct score tried, ties moving
    together): for pixels, what a segmentation threshold chosen on the test masks themselves would reach (anomalib's
    adaptive pixel threshold), a yardstick no rule set from good images can beat on the same images."""
    scores = pooled(scores).astype(np.float64)
    labels = pooled(labels).astype(bool)
    if not labels.any():
        raise ValueError("F1 needs some positive samples")
    tp, fp = _ranked(scores, labels)
    return float((2 * tp / (tp + fp + labels.sum())).max())


def pro_curve(
    maps: np.ndarray | Sequence[np.ndarray], masks: np.ndarray | Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, mean per-region overlap) at every distinct pixel score.

    Each connected defect region weighs the same however large it is; the false positive rate counts every normal
    pixel of every test image.
    """
    regions = []
    count = 0
    for mask in masks:
        labelled, found = ndimage.label(np.asarray(mask, dtype=bool), structure=np.ones((3, 3)))
        regions.append(np.where(labelled > 0, labelled + count, 0).ravel())
        count += found
    if count == 0:
        raise ValueError("PRO needs at least one defect region")
    flat_regions = np.concatenate(regions)
    sizes = np.bincount(flat_regions, minlength=count + 1).astype(np.float64)
    weight = np.where(flat_regions > 0, 1.0 / (sizes[flat_regions] * count), 0.0)
    normal = flat_regions == 0
    scores = pooled(maps).astype(np.float64)
    order = np.argsort(-scores, kind="mergesort")
    scores = scores[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    fpr = np.cumsum(normal[order])[last_of_tie] / normal.sum()
    pro = np.cumsum(weight[order])[last_of_tie]
    return np.r_[0.0, fpr], np.r_[0.0, pro]


def pro_auc(
    maps: np.ndarray | Sequence[np.ndarray], masks: np.ndarray | Sequence[np.ndarray], fpr_limit: float = 0.3
) -> float:
    """Area under the PRO curve up to ``fpr_limit``, divided by ``fpr_limit`` (1.0 is perfect)."""
    fpr, pro = pro_curve(maps, masks)
    cut = np.searchsorted(fpr, fpr_limit, side="right")
    x, y = fpr[:cut], pro[:cut]
    if cut < fpr.size:
        x = np.r_[x, fpr_limit]
        y = np.r_[y, np.interp(fpr_limit, fpr[cut - 1 : cut + 1], pro[cut - 1 : cut + 1])]
    return float(np.trapezoid(y, x) / fpr_limit)
