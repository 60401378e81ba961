"""How good is the verdict? The threshold rules compared on real test splits, with the yardsticks beside them.

For each category: fit in memory (exact search, the model the service stores), score the labelled test split once,
then judge the same scores at each threshold: the former rule (``max(mean + 3 std, max)`` of the held-out good
images), the false-alarm-rate policy at several targets (good images only), and the labelled-defect F1 threshold
(set on the test split itself, so its F1 there is optimistic; the cross-validated F1 is not). Beside each: the best
F1 any threshold reaches on these scores, and the best F1 that keeps false alarms on the good test images within the
target. Plots the score histograms with every threshold (``docs/threshold_<category>.png``).

    python benchmarks/threshold_policy.py --weights ../shared/weights/resnet18-imagenet1k-to-layer3.pth \
        --set ../shared/datasets/mvtec_ad:bottle --set ../shared/datasets/non_square:bsdata_ballscrew
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from patchcore import threshold as thresholds
from patchcore.datasets import mvtec_category
from patchcore.evaluation import evaluate
from patchcore.images import FIELDS_OF_VIEW
from patchcore.model import Embedder, PatchCoreConfig, exact_scorer, fit

TARGETS = (0.01, 0.02, 0.05)


def former_rule(held_out: list[float], sigmas: float = 3.0) -> float:
    """The threshold this service used before the false-alarm-rate policy, for comparison only."""
    scores = np.asarray(held_out)
    return max(float(scores.mean() + sigmas * scores.std(ddof=1)), float(scores.max()))


def rows_for(root: Path, name: str, weights: str, out: Path, field_of_view: str) -> list[dict]:
    category = mvtec_category(root, name)
    config = PatchCoreConfig(backbone="resnet18", field_of_view=field_of_view)
    embedder = Embedder.load(config, weights)
    model = fit(config, category.train, weights, embedder=embedder)
    evaluation = evaluate(category.test, exact_scorer(model, embedder), config.preprocess, model.threshold, 0.02)
    scores, labels = evaluation.scores, evaluation.labels
    held_out = [r.score for r in model.images if r.split == "holdout"]
    out_of_fold = [r.score for r in model.images if r.split == "train"]
    good = model.good_scores
    candidates = [("former rule (held-out mean + 3 std)", former_rule(held_out), 0.02)]
    for target in TARGETS:
        value = thresholds.false_alarm_threshold(good, target)[0]
        candidates.append((f"false-alarm rate {target:.0%}" + (" (default)" if target == 0.02 else ""), value, target))
    labelled, policy = thresholds.labelled_threshold(scores, labels, good)
    candidates.append(("labelled defects: best F1 on the test split", labelled, 0.02))
    rows = []
    for rule, value, target in candidates:
        figures = thresholds.operating_point(scores, labels, value, target)
        rows.append({"category": name, "rule": rule, "threshold": value, "target": target, **figures})
    rows[-1]["f1_cross_validated"] = policy["f1_cross_validated"]
    print(
        f"{name}: {len(out_of_fold)} out-of-fold good scores (median {np.median(out_of_fold):.4f}), {len(held_out)} "
        f"held out (median {np.median(held_out):.4f}), good test images median {np.median(scores[~labels]):.4f}; "
        f"fit {model.timings['fit_seconds']:.1f} s (out-of-fold scoring {model.timings['out_of_fold_seconds']:.1f} s); "
        f"image AUROC {evaluation.figures['image_auroc']:.4f}"
    )
    figure, axis = plt.subplots(figsize=(9, 4.8))
    bins = np.linspace(min(scores.min(), min(good)), max(scores.max(), max(v for _, v, _ in candidates)) * 1.02, 60)
    for values, color, label in (
        (good, "tab:blue", f"good training images as unseen ({len(good)})"),
        (scores[~labels], "tab:green", f"good test images ({(~labels).sum()})"),
        (scores[labels], "tab:red", f"defective test images ({labels.sum()})"),
    ):
        axis.hist(values, bins=bins, density=True, alpha=0.45, color=color, label=label)
    lines = [("black", ":"), ("tab:orange", "--"), ("black", "--"), ("tab:purple", "--"), ("tab:brown", "-")]
    for (rule, value, _), (color, style) in zip(candidates, lines, strict=True):
        axis.axvline(value, color=color, ls=style, label=f"{rule}: {value:.3f}")
    axis.set(xlabel="image anomaly score", ylabel="density", title=f"{name}: scores and thresholds")
    axis.legend(fontsize=7)
    figure.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    figure.savefig(out / f"threshold_{name}{'' if field_of_view == 'crop' else '_' + field_of_view}.png", dpi=110)
    plt.close(figure)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="ResNet-18 weights file")
    parser.add_argument("--set", action="append", required=True, help="ROOT:CATEGORY, MVTec AD layout (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="where the PNG plots go")
    parser.add_argument("--field-of-view", choices=FIELDS_OF_VIEW, default="crop", help="(default %(default)s)")
    args = parser.parse_args()
    rows = []
    for item in args.set:
        root, _, name = item.rpartition(":")
        rows += rows_for(Path(root), name, args.weights, args.out, args.field_of_view)
    print(
        "\n| set | rule | threshold | F1 | recall | false alarms on good test images | best F1 (any threshold) | "
        "best F1 with false alarms within the target |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        f1 = f"{r['f1']:.3f}"
        if "f1_cross_validated" in r:
            f1 += f" (cross-validated {r['f1_cross_validated']:.3f})"
        print(
            f"| {r['category']} | {r['rule']} | {r['threshold']:.4f} | {f1} | {r['recall']:.3f} | "
            f"{r['false_alarms']} ({r['false_alarm_rate']:.0%}) | {r['best_f1']:.3f} | "
            f"{r['best_f1_within_target']:.3f} at {r['target']:.0%} |"
        )


if __name__ == "__main__":
    main()
