"""Evaluation on a labelled test split, whatever does the scoring (exact in memory, or served by pgvector)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from patchcore import metrics, progress, regions
from patchcore import threshold as thresholds
from patchcore.ahead import read_ahead
from patchcore.care import CareArea
from patchcore.datasets.category import Sample
from patchcore.images import upright_size
from patchcore.views import Preprocess


@dataclass
class Scored:
    """One scored image: its image score, its anomaly map over the view (height, width) and its patch distances
    (the grid's rows and columns), which the defect regions are found in."""

    score: float
    anomaly_map: np.ndarray
    patch_scores: np.ndarray | None = None


READ_AHEAD = 8  # test images read ahead of the scoring: a batch of a fit's, a few decoded images' memory


def _the_path(path: Path) -> Path:
    return path


@dataclass(frozen=True)
class Scorer:
    """How a test image is scored, in two steps: ``read`` turns its file into what ``score`` takes (the path itself
    by default). The evaluation runs ``read`` on threads ahead of the scoring (:func:`~patchcore.ahead.read_ahead`),
    as a fit reads its training images, since decoding is most of a CPU's work on a file beside the network's;
    ``score`` runs in order on the calling thread, where a served scorer's database connections live."""

    score: Callable[[Any], Scored]
    read: Callable[[Path], Any] = _the_path


@dataclass
class Evaluation:
    """Scores, maps and ground truth of a test split, and the metrics computed from them. ``maps`` and ``masks`` hold
    one array per image in its view's geometry (images of one category may differ in size); ``whole_maps`` and
    ``whole_masks`` over the whole image (the same arrays for the whole field of view; a crop's map is zero outside
    the crop), so fields of view compare like for like."""

    samples: list[Sample]
    scores: np.ndarray
    maps: list[np.ndarray]
    masks: list[np.ndarray]
    threshold: float
    seconds: float
    whole_maps: list[np.ndarray]
    whole_masks: list[np.ndarray]
    figures: dict[str, float] = field(default_factory=dict)
    good_scores: Sequence[float] | None = None  # the model's good scores, whose prediction the figures check
    good_parts: Sequence[str | None] | None = None  # the part of each good score's image, where a set names them
    grids: list[np.ndarray | None] = field(default_factory=list)  # each image's patch distances, for its regions
    care: CareArea | None = None  # the care area the model was fitted with: no cell is measured outside it

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.is_anomalous for s in self.samples])

    @property
    def verdicts(self) -> np.ndarray:
        return self.scores > self.threshold

    def set_threshold(self, threshold: float, false_alarm_target: float) -> None:
        """Judge the same scores at another threshold: the verdict's figures, and the defect regions' where the
        masks and every patch grid are known, are computed again."""
        self.threshold = threshold
        self.figures.update(
            thresholds.operating_point(self.scores, self.labels, threshold, false_alarm_target, self.good_scores)
        )
        cells = self.cells
        if cells is not None:
            kept, grids, truths = cells
            self.figures["regions"] = regions.localisation(grids, truths, self.verdicts[kept], threshold, self.care)
        parts = part_figures(self.scores, self.labels, [s.part for s in self.samples], threshold, false_alarm_target,
                             self.good_scores, self.good_parts)  # fmt: skip
        if parts is not None:
            self.figures["parts"] = parts

    @cached_property
    def cells(self) -> tuple[list[int], list[np.ndarray], list[regions.CellTruth]] | None:
        """The images whose every pixel's truth is known (their positions), their patch grids and their truths on
        those grids: what judges the defect regions at any threshold (:func:`patchcore.regions.packed` keeps them
        with a stored fit); ``None`` without masks or patch grids. Computed once: a threshold set again and the
        store read the same truths."""
        kept = self._known_pixels()
        if not self.has_masks or any(self.grids[i] is None for i in kept):
            return None
        grids = [self.grids[i] for i in kept]
        return kept, grids, [regions.cell_truth(np.shape(g), self.masks[i]) for g, i in zip(grids, kept, strict=True)]

    @property
    def has_masks(self) -> bool:
        """Some defective image has a ground-truth mask: pixel metrics can be computed (over :meth:`pixel_truth`)."""
        return any(s.is_anomalous and s.mask is not None for s in self.samples)

    def _known_pixels(self) -> list[int]:
        return [i for i, s in enumerate(self.samples) if not s.is_anomalous or s.mask is not None]

    def pixel_truth(self, whole: bool = False) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Maps and masks of the images whose every pixel's truth is known: each good image (all normal) and each
        defective image with a mask. A defective image without one is left out rather than read as all normal,
        which would count its defect's pixels as false alarms."""
        kept = self._known_pixels()
        maps, masks = (self.whole_maps, self.whole_masks) if whole else (self.maps, self.masks)
        return [maps[i] for i in kept], [masks[i] for i in kept]


def evaluate(
    samples: list[Sample],
    scorer: Scorer,
    preprocess: Preprocess,
    threshold: float,
    false_alarm_target: float,
    description: str = "evaluate",
    good_scores: Sequence[float] | None = None,
    good_parts: Sequence[str | None] | None = None,
    care: CareArea | None = None,
) -> Evaluation:
    """Score every test image (read ahead: :class:`Scorer`, the images' sizes and masks with them), then compute image
    AUROC, pixel AUROC, PRO (FPR <= 0.3) and the best pixel F1 in the view, and the first two over the whole image, each
    image at its own size and the pixels pooled, over the images whose pixels' truth is known (``None`` where no defect
    has a mask; ``pixel_metrics`` says what was left out; a split of good or of defective images only has no image
    AUROC, and ``image_metrics`` says what it measures), and the verdict's figures at ``threshold`` beside the best any
    threshold reaches and the false-alarm rate ``good_scores`` predict (:func:`patchcore.threshold.operating_point`; per
    part too, of ``good_parts``), and how well the defect regions at ``threshold`` say where the defects are
    (:func:`patchcore.regions.localisation`, where the scorer gives patch distances). With a care area, the share of the
    masks' defect pixels that lie outside it, which the model does not look at: each pixel metric counts them as
    missed."""
    if not samples:
        raise ValueError("the test split is empty: nothing to evaluate")
    started = time.perf_counter()
    scores, maps, masks, whole_maps, whole_masks, grids = [], [], [], [], [], []

    def read(sample: Sample) -> tuple[Any, tuple[int, int], np.ndarray, np.ndarray]:
        size = upright_size(sample.path)  # the view's, and its mask's, drawn over the picture as it is shown
        item = scorer.read(sample.path)
        return item, size, preprocess.mask(sample.mask, size), preprocess.whole.mask(sample.mask, size)

    ahead = read_ahead(read, samples, READ_AHEAD)
    bar = progress.bar(samples, desc=description, unit="img")
    for _, (item, size, mask, whole_mask) in zip(bar, ahead, strict=True):
        result = scorer.score(item)
        scores.append(result.score)
        maps.append(result.anomaly_map.astype(np.float32))
        grids.append(result.patch_scores)
        masks.append(mask)
        whole_maps.append(preprocess.whole_image_map(maps[-1], size))
        whole_masks.append(whole_mask)
    evaluation = Evaluation(
        samples, np.array(scores), maps, masks, threshold, time.perf_counter() - started, whole_maps, whole_masks,
        good_scores=good_scores, grids=grids, good_parts=good_parts, care=care,
    )  # fmt: skip
    labels = evaluation.labels
    pixel = evaluation.has_masks
    both = bool(labels.any() and not labels.all())
    evaluation.figures = {"image_auroc": metrics.auroc(evaluation.scores, labels) if both else None}
    if pixel:
        maps, masks = evaluation.pixel_truth()
        evaluation.figures["pixel_auroc"] = metrics.auroc(maps, masks)
        evaluation.figures["pro"] = metrics.pro_auc(maps, masks)
        evaluation.figures["best_pixel_f1"] = metrics.best_f1(maps, masks)
        whole = preprocess.field_of_view == "whole"
        if not whole:
            maps, masks = evaluation.pixel_truth(whole=True)
        evaluation.figures["pixel_auroc_whole_image"] = (
            evaluation.figures["pixel_auroc"] if whole else metrics.auroc(maps, masks)
        )
        evaluation.figures["pro_whole_image"] = evaluation.figures["pro"] if whole else metrics.pro_auc(maps, masks)
        if care is not None:
            _, masks = evaluation.pixel_truth()
            defect = sum(int(m.sum()) for m in masks)
            outside = sum(int((m & ~care.over(*m.shape)).sum()) for m in masks)
            evaluation.figures["defect_pixels_outside_care_area"] = outside / defect if defect else None
    else:
        evaluation.figures.update(
            pixel_auroc=None, pro=None, best_pixel_f1=None, pixel_auroc_whole_image=None, pro_whole_image=None
        )
    evaluation.set_threshold(threshold, false_alarm_target)
    note = _pixel_note(samples)
    if note:
        evaluation.figures["pixel_metrics"] = note
    if not both:
        evaluation.figures["image_metrics"] = _one_class_note(labels)
    return evaluation


def part_figures(
    scores: Sequence[float],
    labels: Sequence[bool],
    parts: Sequence[str | None],
    threshold: float,
    target: float,
    good_scores: Sequence[float] | None = None,
    good_parts: Sequence[str | None] | None = None,
) -> dict | None:
    """The verdict per part where a set photographs each part from several cameras (``parts`` names each image's
    part; ``None``: a part of its own): a part scores its worst view and is defective when any view is, so a line
    that rejects a part on any flagged view is judged as it acts (its AUROC is Real-IAD's sample-level S-AUROC).
    Each good view may raise a false alarm, so a good part's false-alarm rate is up to its views times an image's;
    the rate the training parts predict for it (their worst cross-fitted views: ``good_scores`` of ``good_parts``)
    stands beside the one observed. ``None`` where no part has more than one image."""
    groups = thresholds.views_by_part(parts)
    if groups is None:
        return None
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    worst = np.array([scores[views].max() for views in groups])
    defective = np.array([labels[views].any() for views in groups])
    both = bool(defective.any() and not defective.all())
    good = thresholds.worst_views(good_scores, good_parts) if good_scores is not None and good_parts else None
    if good is not None and good.size < thresholds.MIN_GOOD_SCORES:
        good = None  # too few training parts to predict from
    return {
        "parts": len(groups),
        "views_per_part": round(len(scores) / len(groups), 2),
        "part_auroc": metrics.auroc(worst, defective) if both else None,
        **thresholds.operating_point(worst, defective, threshold, target, good),
    }


def _one_class_note(labels: np.ndarray) -> str:
    """What a test split of one kind of image can and cannot say: a set of defects only measures what is caught, a
    set of good parts only the false alarms; a ranking of one against the other (AUROC, best F1) needs both."""
    if labels.all():
        return ("no good test image: the defects caught (recall) are measured; image AUROC, false alarms and best F1 "
                "need good test images too")  # fmt: skip
    return ("no defective test image: the false alarms are measured; image AUROC, recall, precision and F1 need "
            "defective test images too")  # fmt: skip


def _pixel_note(samples: list[Sample]) -> str | None:
    """What the pixel metrics leave out, so that a missing mask is never silently read as a defect-free image."""
    defective = [s for s in samples if s.is_anomalous]
    missing = [s for s in defective if s.mask is None]
    if not defective:
        return "absent: no defective test image"
    if not missing:
        return None
    where = f"ground_truth/<type>/<stem>_mask.png or <stem>.png; first without: {missing[0].path}"
    if len(missing) == len(defective):
        return f"absent: {len(missing)} of {len(defective)} defective test images have no ground-truth mask ({where})"
    return (
        f"over {len(defective) - len(missing)} of {len(defective)} defective test images and every good one; left "
        f"out: {len(missing)} without a ground-truth mask ({where})"
    )


def per_image(evaluation: Evaluation) -> list[dict]:
    """One row per test image, for the JSON report."""
    return [
        {"file": str(s.path), "defect": s.defect, "score": float(score), "anomalous": bool(verdict)}
        | ({"part": s.part} if s.part is not None else {})
        for s, score, verdict in zip(evaluation.samples, evaluation.scores, evaluation.verdicts, strict=True)
    ]
