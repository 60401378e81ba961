"""What a threshold rule spends: the served rule against the log-normal bound alone and the distribution-free order
statistic, over other draws of the good parts.

The false-alarm rule rests on one claim: the good training images scored as unseen (cross-fitted) and new good parts
score alike, so the two sets of scores are exchangeable. Then any rule can be judged without knowing the parts'
distribution: deal the pooled good scores (training and good test images) again, many times, into a training part
and a test part of the original sizes, set the threshold from the training part, and count on the test part the
false alarms (the rule's real rate, whose mean is what the rule spends) and whether issue 19's bar is met (F1 within
0.03 of the best F1 with at most 5% false alarms, chosen on that draw, and at most 5% false alarms), with the same
defects. Five rules at each target:

- the served rule (:func:`patchcore.threshold.false_alarm_threshold`): the log-normal upper prediction bound, or the
  order statistic where the good scores refute the bound (more or fewer of them above it than the target predicts);
- the log-normal bound alone, right by construction only where the scores are log-normal;
- the order statistic: the ``(n + 1)(1 - target)``-th of the ``n`` good scores, interpolated (``numpy`` method
  ``weibull``): under exchangeability a new good part lies above it with probability ``target`` whatever the
  distribution, once ``n + 1 >= 1 / target``;
- two alternatives measured and not served: the upper prediction bound after a Box-Cox transform whose exponent is
  fitted to the scores (maximum likelihood; the log is its exponent 0), and the Harrell-Davis estimate of the same
  quantile as the order statistic (a weighted mean of every order statistic, smoother from draw to draw).

The claim itself is checked where it can be without the test split: the held-out good images (a tenth of the
training images, kept out of the memory bank and scored against all of it, as a new part is) are new good parts of
the same set, so they should lie above the cross-fitted scores' quantiles as often as the quantiles say. The last
table counts them, and the good test images, above the cross-fitted scores' median, 90th and 97th percentiles
(their order statistics, exact for exchangeable scores), pooled over the fits, each share with its 90% interval.

Per set, ratio and seed it fits with default settings (exact search, the model the service stores), scores the
labelled test split once, and prints one row per target and rule; then a summary per target and rule. ``--scores
DIR`` keeps each fit's good and test scores there (``<set>_<ratio>_<seed>.npz``) and reads them back on the next
run instead of fitting again: the rules are judged on the same fits. ``--holdout`` sets the share kept out of the
memory bank (``..._holdout0.0.npz`` where it is not the default; at 0 the last table has the good test images alone).

    python benchmarks/threshold_rules.py --weights ../shared/weights/resnet18-imagenet1k-to-layer3.pth \\
        --set ../shared/datasets/mvtec_ad:bottle --set ../shared/datasets/non_square:bsdata_ballscrew \\
        --set ../shared/datasets/image_level:mvtec_screw --coreset-ratio 0.1 --coreset-ratio 0.01 \\
        --seed 0 --seed 1 --seed 2 --scores /tmp/scores
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import special, stats
from scipy.stats.mstats import hdquantiles

from patchcore import threshold as thresholds
from patchcore.datasets.mvtec import mvtec_category
from patchcore.model import Embedder, PatchCoreConfig, exact_scorer, fit

TARGETS = (0.02, 0.03, 0.04, 0.05)
ROUNDS = 400
LEVELS = (0.5, 0.9, 0.97)


def served(good: np.ndarray, target: float) -> float:
    return thresholds.false_alarm_threshold(good, target)[0]


def box_cox_bound(good: np.ndarray, target: float) -> float:
    """The prediction bound of :func:`patchcore.threshold.log_normal_threshold` in the Box-Cox space whose exponent
    fits the scores best, mapped back (a bound past the transform's range is no threshold: infinity)."""
    transformed, exponent = stats.boxcox(np.asarray(good, dtype=np.float64))
    n = transformed.size
    bound = transformed.mean() + transformed.std(ddof=1) * stats.t.ppf(1 - target, n - 1) * np.sqrt(1 + 1 / n)
    if exponent != 0 and exponent * bound + 1 <= 0:
        return float("inf")
    return float(special.inv_boxcox(bound, exponent))


def harrell_davis(good: np.ndarray, target: float) -> float:
    """The Harrell-Davis estimate at the order statistic's own level, ``(n + 1)(1 - target) / n`` less half a rank."""
    n = len(good)
    level = min(1.0, (n + 1) * (1 - target) / n - 1 / (2 * n))
    return float(hdquantiles(np.asarray(good, dtype=np.float64), prob=[level])[0])


RULES: dict[str, thresholds.Rule] = {
    "served": served,
    "log-normal bound alone": thresholds.log_normal_threshold,
    "order statistic": thresholds.order_statistic,
    "Box-Cox bound": box_cox_bound,
    "Harrell-Davis": harrell_davis,
}


def redealt(good: np.ndarray, test: np.ndarray, labels: np.ndarray, target: float, rule: thresholds.Rule,
            seed: int) -> dict:  # fmt: skip
    """Mean over re-dealt draws: bar met, F1, false-alarm rate; and the same on the one real draw."""
    chances = thresholds.bar_chances(good, test, labels, target, rounds=ROUNDS, seed=seed, rule=rule)
    threshold = rule(good, target)
    real_rate = float(np.mean(test[~labels] > threshold))
    real_f1 = thresholds.f1_score(test, labels, threshold)
    real_met = real_rate <= 0.05 + 1e-9 and real_f1 >= thresholds.best_f1(test, labels, 0.05)[1] - 0.03
    return {"met": chances.rule, "f1": chances.rule_f1, "rate": chances.rule_false_alarm_rate,
            "real_met": real_met, "real_rate": real_rate}  # fmt: skip


def scores(args: argparse.Namespace, category, ratio: float, seed: int) -> dict[str, np.ndarray]:
    """Good scores, which of them are held out, test scores and labels of a fit with default settings, kept in
    ``--scores`` if given (a file without ``holdout``, kept by an earlier build, is fitted again)."""
    held = "" if args.holdout == PatchCoreConfig().holdout_fraction else f"_holdout{args.holdout}"
    kept = Path(args.scores) / f"{category.name}_{ratio}_{seed}{held}.npz" if args.scores else None
    if kept is not None and kept.exists():
        saved = dict(np.load(kept))
        if "holdout" in saved:
            return saved
    config = PatchCoreConfig(backbone="resnet18", coreset_ratio=ratio, seed=seed, holdout_fraction=args.holdout)
    embedder = Embedder.load(config, args.weights)
    model = fit(config, category.train, args.weights, embedder=embedder, parts=category.parts)
    score = exact_scorer(model, embedder)
    test = np.array([score(sample.path).score for sample in category.test])
    labels = np.array([sample.is_anomalous for sample in category.test])
    fitted = {
        "good": np.asarray(model.good_scores, dtype=np.float64),
        "holdout": np.array([r.split == "holdout" for r in model.images if r.score is not None]),
        "test": test,
        "labels": labels,
    }
    if kept is not None:
        kept.parent.mkdir(parents=True, exist_ok=True)
        np.savez(kept, **fitted)
    return fitted


def above_quantiles(fitted: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per kind of new good part (held out, good test images): how many lie above each of :data:`LEVELS`' order
    statistics of the cross-fitted scores, and how many there are."""
    cross_fitted = fitted["good"][~fitted["holdout"]]
    cuts = [thresholds.order_statistic(cross_fitted, 1 - level) for level in LEVELS]
    kinds = {"held out": fitted["good"][fitted["holdout"]], "good test images": fitted["test"][~fitted["labels"]]}
    return {kind: np.array([[np.sum(new > cut), new.size] for cut in cuts]) for kind, new in kinds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="ResNet-18 weights file")
    parser.add_argument("--set", action="append", required=True, help="ROOT:CATEGORY (repeatable)")
    parser.add_argument("--coreset-ratio", type=float, action="append", default=None, help="(repeatable; 0.1)")
    parser.add_argument("--seed", type=int, action="append", default=None, help="(repeatable; 0)")
    parser.add_argument("--scores", help="folder that keeps each fit's scores, read back instead of fitting again")
    parser.add_argument("--holdout", type=float, default=PatchCoreConfig().holdout_fraction,
                        help="share of the good images kept out of the memory bank (default %(default)s)")  # fmt: skip
    args = parser.parse_args()
    rows = []
    counts: dict[str, np.ndarray] = {}
    print("| set | coreset | seed | target | rule | false alarms re-dealt (mean) | bar met re-dealt | mean F1 re-dealt "
          "| real draw: false alarms, bar met |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for spec in args.set:
        root, name = spec.rsplit(":", 1)
        category = mvtec_category(Path(root), name)
        for ratio in args.coreset_ratio or [0.1]:
            for seed in args.seed or [0]:
                fitted = scores(args, category, ratio, seed)
                good, test, labels = fitted["good"], fitted["test"], fitted["labels"]
                for kind, count in above_quantiles(fitted).items():
                    counts[kind] = counts.get(kind, 0) + count
                for target in TARGETS:
                    for rule_name, rule in RULES.items():
                        row = {"target": target, "rule": rule_name, **redealt(good, test, labels, target, rule, seed)}
                        rows.append(row)
                        print(f"| {name} | {ratio:.0%} | {seed} | {target:.0%} | {rule_name} | {row['rate']:.1%} | "
                              f"{row['met']:.0%} | {row['f1']:.3f} | {row['real_rate']:.0%}, "
                              f"{'yes' if row['real_met'] else 'no'} |", flush=True)  # fmt: skip
    print("\n| target | rule | rows | false alarms re-dealt: mean (range over rows) | bar met re-dealt, mean | mean F1 "
          "re-dealt | real draws: bar met, false alarms pooled (mean of rows) |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for target in TARGETS:
        for rule_name in RULES:
            mine = [r for r in rows if r["target"] == target and r["rule"] == rule_name]
            rates = [r["rate"] for r in mine]
            print(f"| {target:.0%} | {rule_name} | {len(mine)} | {np.mean(rates):.1%} ({min(rates):.1%}-"
                  f"{max(rates):.1%}) | {np.mean([r['met'] for r in mine]):.0%} | "
                  f"{np.mean([r['f1'] for r in mine]):.3f} | {sum(r['real_met'] for r in mine)} of {len(mine)}, "
                  f"{np.mean([r['real_rate'] for r in mine]):.1%} |")  # fmt: skip
    print("\n| new good parts | " + " | ".join(f"above the cross-fitted scores' {level:.0%} point (expected "
          f"{1 - level:.0%}; 90% interval)" for level in LEVELS) + " |")  # fmt: skip
    print("| --- |" + " --- |" * len(LEVELS))
    for kind, count in counts.items():
        if not count[:, 1].any():  # no hold-out (--holdout 0): the good test images alone
            continue
        cells = []
        for above, total in count:
            low, high = thresholds.clopper_pearson(int(above), int(total))
            cells.append(f"{above} of {total} ({above / total:.1%}; {low:.1%}-{high:.1%})")
        print(f"| {kind} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
