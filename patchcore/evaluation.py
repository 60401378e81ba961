"""Evaluation on a labelled test split, whatever does the scoring (exact in memory, or served by pgvector)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from patchcore import metrics
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


def evaluate(
    samples: list[Sample],
    score: Callable[[Path], Scored],
    preprocess: Preprocess,
    threshold: float,
    description: str = "evaluate",
) -> Evaluation:
    """Score every test image, then compute image AUROC, pixel AUROC, PRO (FPR <= 0.3) and F1 at ``threshold``."""
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
    evaluation.figures = {
        "image_auroc": metrics.auroc(evaluation.scores, labels),
        "pixel_auroc": metrics.auroc(evaluation.maps, evaluation.masks),
        "pro": metrics.pro_auc(evaluation.maps, evaluation.masks),
        **metrics.f1_at(evaluation.scores, labels, threshold),
    }
    return evaluation


def per_image(evaluation: Evaluation) -> list[dict]:
    """One row per test image, for the JSON report."""
    return [
        {"file": str(s.path), "defect": s.defect, "score": float(score), "anomalous": bool(verdict)}
        for s, score, verdict in zip(evaluation.samples, evaluation.scores, evaluation.verdicts, strict=True)
    ]
