"""The evaluation report: a table on the terminal, a JSON file and PNG plots."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from patchcore import plots
from patchcore.evaluation import Evaluation, per_image
from patchcore.features import STRIDES
from patchcore.metrics import auroc
from patchcore.model import FittedModel
from patchcore.threshold import HIGHEST_SHOWN


def model_figures(model: FittedModel) -> dict:
    """The fit figures every report carries."""
    return {
        "threshold": model.threshold,
        "memory_bank_size": int(model.memory_bank.shape[0]),
        "embedding_dim": int(model.memory_bank.shape[1]),
        "fit_seconds": model.timings["fit_seconds"],
        "coreset_seconds": model.timings["coreset_seconds"],
        "feature_seconds": model.timings["feature_seconds"],
        "train_images": sum(1 for r in model.images if r.split == "train"),
        "holdout_images": sum(1 for r in model.images if r.split == "holdout"),
        "training_parts": model.parts,
        "out_of_fold_seconds": model.timings.get("out_of_fold_seconds"),
        "features_on_disk": model.features_on_disk,
        "threshold_policy": model.threshold_policy,
    }


def view_scale(model: FittedModel) -> dict:
    """How finely the model saw its good images: their most common size, its view, and how many of its pixels one
    patch spans (:meth:`patchcore.views.Preprocess.footprint`); over images of several sizes, also the size where a
    patch spans the fewest pixels and the one where it spans the most (a larger image seen at the same budget). A
    defect much smaller than a patch changes its patch's features little whatever the memory bank holds, so a
    product whose defects are that small learns from its first fit that the view (``--pixels``, ``--tile``), not the
    threshold, is what to change."""
    config = model.config
    sizes = Counter((r.width, r.height) for r in model.images)
    (width, height), count = sizes.most_common(1)[0]
    view = config.preprocess.view(width, height)
    stride = STRIDES[config.layers[0]]
    spans = {size: tuple(round(side, 1) for side in config.preprocess.footprint(*size, stride)) for size in sizes}
    finest, coarsest = (extreme(spans, key=lambda size: spans[size][0] * spans[size][1]) for extreme in (min, max))
    return {
        "image": [width, height], "images_of_that_size": count, "images": len(model.images), "image_sizes": len(sizes),
        "view": [view.width, view.height], "patch_pixels": list(spans[(width, height)]),
        "finest": {"image": list(finest), "patch_pixels": list(spans[finest])},
        "coarsest": {"image": list(coarsest), "patch_pixels": list(spans[coarsest])},
    }  # fmt: skip


def highest_good_scores(model: FittedModel, limit: int | None = HIGHEST_SHOWN) -> list[dict]:
    """The good images that score highest as unseen parts, highest first, and whether each is above the threshold:
    the tail the threshold rests on, where a defective image among the good ones, or a rare good look, shows.
    ``limit`` ``None``: all of them."""
    scored = sorted((r for r in model.images if r.score is not None), key=lambda r: -r.score)[:limit]
    return [
        {"file": r.file_name, "split": r.split, "score": r.score, "above_threshold": r.score > model.threshold}
        for r in scored
    ]


def per_defect_auroc(evaluation: Evaluation) -> dict[str, float]:
    """Image AUROC of each defect type against the good test images (none without good test images)."""
    labels = evaluation.labels
    result: dict[str, float] = {}
    if labels.all():
        return result
    for defect in sorted({s.defect for s in evaluation.samples if s.is_anomalous}):
        keep = [s.defect in (defect, "good") for s in evaluation.samples]
        result[defect] = auroc(evaluation.scores[keep], labels[keep])
    return result


def build(category: str, model: FittedModel, evaluation: Evaluation | None, extra: dict | None = None) -> dict:
    report: dict = {"category": category, **model_figures(model), "config": model.config.as_dict()}
    report["weights"] = model.weights
    if evaluation is not None:
        report.update(evaluation.figures)
        report["eval_seconds"] = evaluation.seconds
        report["test_images"] = len(evaluation.samples)
        report["per_defect_image_auroc"] = per_defect_auroc(evaluation)
        report["images"] = per_image(evaluation)
    report["good_scores"] = {s: [r.score for r in model.images if r.split == s] for s in ("train", "holdout")}
    report["highest_good_scores"] = highest_good_scores(model)
    report["view_scale"] = view_scale(model)
    report.update(extra or {})
    return report


TABLE_KEYS = (
    "image_auroc",
    "pixel_auroc",
    "pro",
    "threshold",
    "f1",
    "precision",
    "recall",
    "false_alarm_rate",
    "predicted_false_alarm_rate",
    "good_above_good_median.share",
    "best_f1",
    "best_f1_within_target",
    "parts.part_auroc",
    "parts.f1",
    "parts.false_alarm_rate",
    "regions.defects_found",
    "regions.regions_on_defects",
    "regions.pixel_f1",
    "best_pixel_f1",
    "defect_pixels_outside_care_area",
    "memory_bank_size",
    "embedding_dim",
    "feature_seconds",
    "coreset_seconds",
    "out_of_fold_seconds",
    "fit_seconds",
    "eval_seconds",
)


def table(rows: dict[str, dict], keys: tuple[str, ...] = TABLE_KEYS) -> str:
    """A fixed-width table, one column per report (category or scoring path); ``regions.pixel_f1`` names a figure
    of a nested one."""
    names = list(rows)
    width = max(12, *(len(n) for n in names))
    label = max(len(k) for k in keys) + 2
    lines = ["metric".ljust(label) + "".join(n.rjust(width + 2) for n in names)]
    for key in keys:
        if not any(_figure(r, key) is not _ABSENT for r in rows.values()):
            continue
        cells = []
        for name in names:
            value = _figure(rows[name], key)
            value = None if value is _ABSENT else value
            cells.append("-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value))
        lines.append(key.ljust(label) + "".join(c.rjust(width + 2) for c in cells))
    return "\n".join(lines)


_ABSENT = object()


def _figure(row: dict, key: str) -> object:
    """The figure ``key`` of a report, ``a.b`` for figure ``b`` of its ``a``; ``_ABSENT`` where it has none."""
    for part in key.split("."):
        if not isinstance(row, dict) or part not in row:
            return _ABSENT
        row = row[part]
    return row


def write_plots(report: dict, evaluation: Evaluation | None, model: FittedModel, folder: Path) -> list[Path]:
    """The evaluation's PNG plots in ``folder`` (none without an evaluation), listed in the report."""
    folder.mkdir(parents=True, exist_ok=True)
    if evaluation is None:
        return []
    paths = plots.write_all(evaluation, model.config.preprocess, folder, report["category"])
    report["plots"] = [str(p) for p in paths]
    return paths


def write(report: dict, folder: Path) -> Path:
    """``folder/report.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "report.json"
    path.write_text(json.dumps(report, indent=2))
    return path
