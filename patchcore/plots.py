"""PNG figures of an evaluation: ROC curves, score histogram with the threshold, heatmaps over test images."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from patchcore import metrics
from patchcore.evaluation import Evaluation
from patchcore.views import Preprocess


def _thin(x: np.ndarray, y: np.ndarray, points: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    if x.size <= points:
        return x, y
    keep = np.unique(np.linspace(0, x.size - 1, points).astype(int))
    return x[keep], y[keep]


def roc_figure(evaluation: Evaluation, path: Path, title: str) -> bool:
    """The image and pixel ROC curves, those the split allows; False (nothing drawn) when it allows neither."""
    curves = []
    image_auroc = evaluation.figures["image_auroc"]
    if image_auroc is not None:
        curves.append(("image", metrics.roc_curve(evaluation.scores, evaluation.labels), image_auroc))
    if evaluation.has_masks:
        pixel = metrics.roc_curve(*evaluation.pixel_truth())
        curves.append(("pixel", pixel, evaluation.figures["pixel_auroc"]))
    if not curves:
        return False
    figure, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4.5), squeeze=False)
    for axis, (name, (fpr, tpr), area) in zip(axes[0], curves, strict=True):
        axis.plot(*_thin(fpr, tpr), lw=2, label=f"AUROC {area:.4f}")
        axis.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
        axis.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{title}: {name} ROC")
        axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def histogram_figure(evaluation: Evaluation, path: Path, title: str) -> None:
    figure, axis = plt.subplots(figsize=(7, 4.5))
    labels = evaluation.labels
    bins = np.linspace(evaluation.scores.min(), max(evaluation.scores.max(), evaluation.threshold), 40)
    axis.hist(evaluation.scores[~labels], bins=bins, alpha=0.7, label=f"good ({(~labels).sum()})", color="tab:green")
    axis.hist(evaluation.scores[labels], bins=bins, alpha=0.7, label=f"defective ({labels.sum()})", color="tab:red")
    axis.axvline(evaluation.threshold, color="black", ls="--", label=f"threshold {evaluation.threshold:.4f}")
    axis.set(xlabel="image anomaly score", ylabel="images", title=f"{title}: scores of the test split")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _overlay(axis: plt.Axes, image: np.ndarray, heat: np.ndarray, mask: np.ndarray, vmax: float) -> None:
    axis.imshow(image)
    axis.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=vmax)
    if mask.any():
        axis.contour(mask, levels=[0.5], colors="white", linewidths=1)
    axis.axis("off")


def heatmap_grid(evaluation: Evaluation, preprocess: Preprocess, path: Path, title: str, per_type: int = 2) -> None:
    """Test images with their heatmaps (ground truth outlined in white), the highest-scoring of each defect type."""
    chosen: list[int] = []
    for defect in sorted({s.defect for s in evaluation.samples}):
        members = [i for i, s in enumerate(evaluation.samples) if s.defect == defect]
        chosen += sorted(members, key=lambda i: -evaluation.scores[i])[:per_type]
    columns = min(4, len(chosen))
    rows = -(-len(chosen) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.4 * rows), squeeze=False)
    vmax = float(np.percentile(metrics.pooled(evaluation.maps), 99.9))
    for axis in axes.ravel():
        axis.axis("off")
    for axis, i in zip(axes.ravel(), chosen, strict=False):
        sample = evaluation.samples[i]
        image = np.asarray(preprocess.cropped(preprocess.decode(sample.path)))
        _overlay(axis, image, evaluation.maps[i], evaluation.masks[i], vmax)
        verdict = "DEFECT" if evaluation.scores[i] > evaluation.threshold else "ok"
        axis.set_title(f"{sample.defect}/{sample.path.name}\n{evaluation.scores[i]:.4f} {verdict}", fontsize=9)
    outlined = any(evaluation.samples[i].mask is not None for i in chosen)  # a set labelled per image has none
    figure.suptitle(f"{title}: anomaly maps" + (" (white: ground truth)" if outlined else ""))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def example_figure(evaluation: Evaluation, preprocess: Preprocess, path: Path) -> None:
    """One defective test image beside its heatmap: the picture the README opens with."""
    labels = evaluation.labels
    i = int(np.flatnonzero(labels)[np.argmax(evaluation.scores[labels])])
    sample = evaluation.samples[i]
    image = np.asarray(preprocess.cropped(preprocess.decode(sample.path)))
    figure, axes = plt.subplots(1, 2, figsize=(6.4, 3.4))
    axes[0].imshow(image)
    axes[0].axis("off")
    axes[0].set_title(f"{sample.defect}/{sample.path.name}", fontsize=9)
    _overlay(axes[1], image, evaluation.maps[i], evaluation.masks[i], float(evaluation.maps[i].max()))
    axes[1].set_title(f"score {evaluation.scores[i]:.4f} > threshold {evaluation.threshold:.4f}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_all(evaluation: Evaluation, preprocess: Preprocess, folder: Path, title: str) -> list[Path]:
    """The plots the split allows: no ROC without both kinds of image or a mask, no example without a defect."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    if roc_figure(evaluation, folder / "roc.png", title):
        paths.append(folder / "roc.png")
    histogram_figure(evaluation, folder / "scores.png", title)
    heatmap_grid(evaluation, preprocess, folder / "heatmaps.png", title)
    paths += [folder / "scores.png", folder / "heatmaps.png"]
    if evaluation.labels.any():
        example_figure(evaluation, preprocess, folder / "example.png")
        paths.append(folder / "example.png")
    return paths
