"""How good is the verdict on parts the model never saw? The automatic threshold over several real sets and coreset
ratios, in one table, with the yardsticks beside it and its calibration checked.

For each set and coreset ratio: fit in memory with default settings (exact search, the model the service stores),
score the labelled test split once, then judge the same scores at the false-alarm-rate thresholds (1%, 2%, 3% the
default, 5%) set from good training images only. Beside each: F1, recall, the false alarms on the good test images
with a 90% Clopper-Pearson interval, the false-alarm rate the good scores predict, and the best F1 any threshold
reaches while keeping false alarms within 5% (the yardstick of issue 19), and how often the bar (F1 within 0.03 of
the yardstick, at most 5% false alarms) is met over other draws of the good test parts, by the rule and by an oracle
that knows the good parts' distribution (:func:`patchcore.threshold.bar_chances`). Plots predicted against observed
false-alarm rates for every set (``--plot``), and each set's score histograms (``docs/threshold_<set>_<ratio>.png``).
Closes with, per target, how many rows meet issue 19's bar and how many exceed 5% false alarms; with several
``--seed`` values the rows repeat per seed (the hold-out split, projection, first centre and folds are drawn from
it), which shows how much of a figure is the draw; ``--holdout`` sets the share of good images kept out of the
memory bank (0: every one in it, scored by the cross-fit alone). With several ``--pixels`` budgets (the whole
view's pixel count) it also prints what each costs and gains: image and pixel AUROC, fit time, scoring time per
test image, F1 at the default threshold.

    python benchmarks/threshold_policy.py --weights ../shared/weights/resnet18-imagenet1k-to-layer3.pth \
        --set ../shared/datasets/mvtec_ad:bottle --set ../shared/datasets/non_square:bsdata_ballscrew \
        --set ../shared/datasets/image_level:mvtec_screw --coreset-ratio 0.1 --coreset-ratio 0.01 \
        --plot docs/threshold_calibration.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from patchcore import threshold as thresholds
from patchcore.datasets.mvtec import mvtec_category
from patchcore.evaluation import evaluate
from patchcore.model import Embedder, PatchCoreConfig, exact_scorer, fit
from patchcore.views import FIELDS_OF_VIEW

TARGETS = (0.01, 0.02, thresholds.DEFAULT_FALSE_ALARM_RATE, 0.05)
DEFAULT_PIXELS = PatchCoreConfig().pixels
YARDSTICK = 0.05
BAR = 0.03  # issue 19: F1 at the threshold within this of the yardstick


def rows_for(
    root: Path,
    name: str,
    weights: str,
    out: Path,
    field_of_view: str,
    ratio: float,
    pixels: int,
    seed: int,
    holdout: float = PatchCoreConfig().holdout_fraction,
) -> list[dict]:
    category = mvtec_category(root, name)
    config = PatchCoreConfig(
        backbone="resnet18", field_of_view=field_of_view, coreset_ratio=ratio, pixels=pixels, seed=seed,
        holdout_fraction=holdout,
    )  # fmt: skip
    embedder = Embedder.load(config, weights)
    model = fit(config, category.train, weights, embedder=embedder, parts=category.parts)
    good = model.good_scores
    evaluation = evaluate(
        category.test,
        exact_scorer(model, embedder),
        model.config.preprocess,
        model.threshold,
        config.false_alarm_rate,
        good_scores=good,
    )
    scores, labels = evaluation.scores, evaluation.labels
    cross_fitted = [r.score for r in model.images if r.split == "train"]
    held_out = [r.score for r in model.images if r.split == "holdout"]
    held_median = f" (median {np.median(held_out):.4f})" if held_out else ""
    print(
        f"{name} at {ratio:.0%}, seed {seed}: {len(cross_fitted)} cross-fitted good scores (median "
        f"{np.median(cross_fitted):.4f}), {len(held_out)} held out{held_median}, good test "
        f"images median {np.median(scores[~labels]):.4f}; fit {model.timings['fit_seconds']:.1f} s (features "
        f"{model.timings['feature_seconds']:.1f}, coreset {model.timings['coreset_seconds']:.1f}, good scores "
        f"{model.timings['out_of_fold_seconds']:.1f}); image AUROC {evaluation.figures['image_auroc']:.4f}; "
        f"pixel AUROC {evaluation.figures['pixel_auroc'] or float('nan'):.4f}; {len(category.test)} test images "
        f"scored in {evaluation.seconds:.1f} s (exact search)",
        flush=True,
    )
    yardstick = thresholds.best_f1(scores, labels, YARDSTICK)[1]
    # the yardstick's threshold is chosen on the very images it is counted on; chosen on 4/5 and counted on the 5th
    # instead (median over 50 random stratified splits), it shows how much of it is that choice's own optimism
    unseen = float(np.median([
        thresholds.cross_validated_f1(scores, labels, seed=seed, max_false_alarm_rate=YARDSTICK) for seed in range(50)
    ]))  # fmt: skip
    rows, lines = [], []
    for target in TARGETS:
        value = thresholds.false_alarm_threshold(good, target)[0]
        figures = thresholds.operating_point(scores, labels, value, target, good)
        redealt = thresholds.bar_chances(good, scores, labels, target, BAR, YARDSTICK, seed=seed)
        rows.append({
            "set": name, "ratio": ratio, "seed": seed, "target": target, "threshold": value, "yardstick": yardstick,
            "unseen": unseen, "redealt": redealt,
            "image_auroc": evaluation.figures["image_auroc"], "fit_seconds": model.timings["fit_seconds"],
            "good_test": int((~labels).sum()), "pixels": pixels, "pixel_auroc": evaluation.figures["pixel_auroc"],
            "ms_per_image": evaluation.seconds / len(category.test) * 1000, "bank": model.memory_bank.shape[0],
            **figures,
        })  # fmt: skip
        lines.append((f"false-alarm rate {target:.0%}", value))
    figure, axis = plt.subplots(figsize=(9, 4.8))
    bins = np.linspace(min(scores.min(), min(good)), max(scores.max(), max(v for _, v in lines)) * 1.02, 60)
    for values, color, label in (
        (good, "tab:blue", f"good training images as unseen ({len(good)})"),
        (scores[~labels], "tab:green", f"good test images ({(~labels).sum()})"),
        (scores[labels], "tab:red", f"defective test images ({labels.sum()})"),
    ):
        axis.hist(values, bins=bins, density=True, alpha=0.45, color=color, label=label)
    for (rule, value), style in zip(lines, (":", "--", "-", "-."), strict=True):
        axis.axvline(value, color="black", ls=style, label=f"{rule}: {value:.3f}")
    side = round(pixels**0.5)
    budget = "" if pixels == DEFAULT_PIXELS else f", {side}x{side} pixels"
    title = f"{name}, coreset {ratio:.0%}{budget}{f', seed {seed}' if seed else ''}: scores and thresholds"
    axis.set(xlabel="image anomaly score", ylabel="density", title=title)
    axis.legend(fontsize=7)
    figure.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    suffix = ("" if pixels == DEFAULT_PIXELS else f"_{side}px") + (f"_seed{seed}" if seed else "")
    figure.savefig(out / f"threshold_{name}_{ratio:g}{suffix}.png", dpi=110)
    plt.close(figure)
    return rows


def _redealt(chances: thresholds.BarChances) -> str:
    """The re-dealt columns: the bar's chances, then the mean F1s."""
    return (
        f"{chances.rule:.0%}, {chances.oracle:.0%} | {chances.rule_f1:.3f}, {chances.oracle_f1:.3f}, "
        f"{chances.yardstick_f1:.3f}"
    )


def _side(pixels: int) -> str:
    side = round(pixels**0.5)
    return f"{side}x{side}" if side * side == pixels else str(pixels)


def plot_calibration(rows: list[dict], path: Path) -> None:
    """Observed false-alarm rate on the good test images (with its 90% interval) against the predicted one."""
    figure, axis = plt.subplots(figsize=(6.4, 5.6))
    keys = sorted({(r["set"], r["ratio"], r["pixels"], r["seed"]) for r in rows})
    for i, key in enumerate(keys):
        mine = [r for r in rows if (r["set"], r["ratio"], r["pixels"], r["seed"]) == key]
        x = np.array([r["predicted_false_alarm_rate"] for r in mine]) * (1 + 0.03 * (i - len(keys) / 2))
        y = np.array([r["false_alarm_rate"] for r in mine])
        low = y - np.array([r["false_alarm_interval"][0] for r in mine])
        high = np.array([r["false_alarm_interval"][1] for r in mine]) - y
        label = f"{key[0]}, coreset {key[1]:.0%}, {_side(key[2])}" + (f", seed {key[3]}" if key[3] else "")
        axis.errorbar(x, y, yerr=[low, high], fmt="o-", capsize=3, label=label)
    limit = max(0.2, max(r["false_alarm_interval"][1] for r in rows) * 1.05)
    axis.plot([0, limit], [0, limit], color="grey", ls="--", label="observed = predicted")
    axis.set(
        xlabel="false-alarm rate the good training scores predict",
        ylabel="false-alarm rate on the good test images (90% interval)",
        xlim=(0, 0.06),
        ylim=(0, limit),
        title="Calibration of the automatic threshold",
    )
    axis.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def print_summary(rows: list[dict]) -> None:
    """Per target, over every row (set, ratio, budget, seed): how often the verdict meets issue 19's bar (F1 within
    0.03 of the yardstick, with at most 5% false alarms on the good test images), how often its false alarms exceed
    5%, and the false alarms pooled over all good test images: the trade each target makes. Beside it, how often
    the bar is met on average over other draws of the good test parts (:func:`patchcore.threshold.bar_chances`), by
    the rule and by an oracle that knows the good parts' distribution: what the row count can be expected to be."""
    print(f"\n| target | rows | F1 within {BAR} of the yardstick, false alarms <= {YARDSTICK:.0%} | "
          f"false alarms > {YARDSTICK:.0%} | false alarms, pooled | bar met over re-dealt good parts, mean: the "
          "rule, an oracle | mean F1 there: the rule, an oracle, the yardstick |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for target in TARGETS:
        mine = [r for r in rows if r["target"] == target]
        within = [r["false_alarms"] <= YARDSTICK * r["good_test"] + 1e-9 for r in mine]
        met = sum(w and r["f1"] >= r["yardstick"] - BAR for w, r in zip(within, mine, strict=True))
        alarms, good = sum(r["false_alarms"] for r in mine), sum(r["good_test"] for r in mine)
        bold = "**" if target == thresholds.DEFAULT_FALSE_ALARM_RATE else ""
        print(f"| {bold}{target:.0%}{bold} | {len(mine)} | {met} | {len(mine) - sum(within)} | "
              f"{alarms} of {good} ({alarms / good:.1%}) | "
              f"{_redealt(thresholds.BarChances(*np.mean([r['redealt'] for r in mine], axis=0)))} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="ResNet-18 weights file")
    parser.add_argument("--set", action="append", required=True, help="ROOT:CATEGORY, MVTec AD layout (repeatable)")
    parser.add_argument("--coreset-ratio", type=float, action="append", help="(repeatable; default 0.1)")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="where the histograms go")
    parser.add_argument("--plot", type=Path, help="PNG of predicted against observed false-alarm rates")
    parser.add_argument("--field-of-view", choices=FIELDS_OF_VIEW, default="whole", help="(default %(default)s)")
    parser.add_argument("--pixels", type=int, action="append", help="whole view's pixel budget (repeatable; default "
                        "224x224's)")  # fmt: skip
    parser.add_argument("--seed", type=int, action="append", help="the fit's seed: hold-out split, projection, first "
                        "centre, folds (repeatable; default 0): how much of a figure is the draw")  # fmt: skip
    parser.add_argument("--holdout", type=float, default=PatchCoreConfig().holdout_fraction,
                        help="share of the good images kept out of the memory bank (default %(default)s)")  # fmt: skip
    args = parser.parse_args()
    rows = []
    for item in args.set:
        root, _, name = item.rpartition(":")
        for ratio in args.coreset_ratio or [0.1]:
            for pixels in args.pixels or [DEFAULT_PIXELS]:
                for seed in args.seed or [0]:
                    rows += rows_for(
                        Path(root), name, args.weights, args.out, args.field_of_view, ratio, pixels, seed, args.holdout
                    )
    seeds = len(args.seed or [0]) > 1
    print(
        "\n| set | coreset | pixels | " + ("seed | " if seeds else "") + "target | threshold | F1 | recall | "
        "false alarms on good test images (90% interval) | "
        f"predicted | best F1 with <= {YARDSTICK:.0%} false alarms | the same chosen on 4/5, counted on 1/5 | gap | "
        "image AUROC | bar met over re-dealt good parts: the rule, an oracle | mean F1 there: the rule, an oracle, "
        "the yardstick |"
    )
    print("| --- " * (16 if seeds else 15) + "|")
    for r in rows:
        low, high = r["false_alarm_interval"]
        bold = "**" if r["target"] == thresholds.DEFAULT_FALSE_ALARM_RATE else ""
        seed = f"{r['seed']} | " if seeds else ""
        print(
            f"| {r['set']} | {r['ratio']:.0%} | {_side(r['pixels'])} | {seed}{bold}{r['target']:.0%}{bold} | "
            f"{r['threshold']:.4f} | {r['f1']:.3f} | "
            f"{r['recall']:.3f} | {r['false_alarms']} of {r['good_test']} ({r['false_alarm_rate']:.0%}; "
            f"{low:.0%}-{high:.0%}) | {r['predicted_false_alarm_rate']:.1%} | {r['yardstick']:.3f} | "
            f"{r['unseen']:.3f} | {r['f1'] - r['yardstick']:+.3f} | {r['image_auroc']:.4f} | "
            f"{_redealt(r['redealt'])} |"
        )
    print_summary(rows)
    if len(args.pixels or []) > 1:
        print("\n| set | coreset | pixels | memory bank | image AUROC | pixel AUROC | fit s | ms per test image "
              f"| F1 at {thresholds.DEFAULT_FALSE_ALARM_RATE:.0%} | best F1 with <= 5% false alarms |")  # fmt: skip
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in rows:
            if r["target"] == thresholds.DEFAULT_FALSE_ALARM_RATE:
                pixel = "-" if r["pixel_auroc"] is None else f"{r['pixel_auroc']:.4f}"
                print(
                    f"| {r['set']} | {r['ratio']:.0%} | {_side(r['pixels'])} | {r['bank']} | "
                    f"{r['image_auroc']:.4f} | {pixel} | {r['fit_seconds']:.1f} | {r['ms_per_image']:.0f} | "
                    f"{r['f1']:.3f} | {r['yardstick']:.3f} |"
                )
    if args.plot:
        plot_calibration(rows, args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
