"""Evaluation on a labelled test split, whatever does the scoring (exact in memory, or served by pgvector)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from patchcore import metrics
from patchcore import threshold as thresholds
from patchcore.datasets import Sample
from patchcore.images import Preprocess


@dataclass
class Scored:
    """One scored image: its image score and its (crop, crop) anomaly map."""

    score: float
    anomaly_map: np.ndarray


@dataclass
class Evaluation:
    """Scores, maps and ground truth of a test split, and the metrics computed from them."""

    samples: list[Sample]
    scores: np.ndarray
    maps: np.ndarray
    masks: np.ndarray
    threshold: float
    seconds: float
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.is_anomalous for s in self.samples])

    @property
    def verdicts(self) -> np.ndarray:
        return self.scores > self.threshold

    def set_threshold(self, threshold: float, false_alarm_target: float) -> None:
        """Judge the same scores at another threshold: the verdict's figures are computed again."""
        self.threshold = threshold
        self.figures.update(thresholds.operating_point(self.scores, self.labels, threshold, false_alarm_target))

    @property
    def has_masks(self) -> bool:
        """Every defective image has a ground-truth mask: pixel metrics can be computed."""
        return all(s.mask is not None for s in self.samples if s.is_anomalous) and bool(self.labels.any())


def evaluate(
    samples: list[Sample],
    score: Callable[[Path], Scored],
    preprocess: Preprocess,
    threshold: float,
    false_alarm_target: float,
    description: str = "evaluate",
) -> Evaluation:
    """Score every test image, then compute image AUROC, pixel AUROC and PRO (FPR <= 0.3) where every defect has a
    mask (``None`` where not), and the verdict's figures at ``threshold`` beside the best any threshold reaches
    (:func:`patchcore.threshold.operating_point`)."""
    if not samples:
        raise ValueError("the test split is empty: nothing to evaluate")
    started = time.perf_counter()
    scores, maps, masks = [], [], []
    for sample in tqdm(samples, desc=description, unit="img", dynamic_ncols=True):
        result = score(sample.path)
        scores.append(result.score)
        maps.append(result.anomaly_map.astype(np.float32))
        masks.append(preprocess.mask(sample.mask))
    evaluation = Evaluation(
        samples, np.array(scores), np.stack(maps), np.stack(masks), threshold, time.perf_counter() - started
    )
    labels = evaluation.labels
    pixel = evaluation.has_masks
    evaluation.figures = {
        "image_auroc": metrics.auroc(evaluation.scores, labels),
        "pixel_auroc": metrics.auroc(evaluation.maps, evaluation.masks) if pixel else None,
        "pro": metrics.pro_auc(evaluation.maps, evaluation.masks) if pixel else None,
    }
    evaluation.set_threshold(threshold, false_alarm_target)
    if not pixel:
        evaluation.figures["pixel_metrics"] = "absent: not every defective test image has a ground-truth mask"
    return evaluation


def per_image(evaluation: Evaluation) -> list[dict]:
    """One row per test image, for the JSON report."""
    return [
        {"file": str(s.path), "defect": s.defect, "score": float(score), "anomalous": bool(verdict)}
        for s, score, verdict in zip(evaluation.samples, evaluation.scores, evaluation.verdicts, strict=True)
    ]
