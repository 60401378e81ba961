"""Where the verdict's threshold comes from, in one place.

A threshold is an operating point, and every one is stored with the description of how it was set (``policy``):

- ``false_alarm_rate`` (the default, good images only): the score above which a good part is expected to fall with
  probability ``target``. The good scores are every training image scored as unseen (cross-fitted, see
  :mod:`patchcore.cross_fit`) and the held-out images. The threshold is the upper prediction bound
  of a log-normal fitted to them: with ``n`` scores of mean ``m`` and standard deviation ``s`` in log space,
  ``exp(m + s * t_{n-1}(1 - target) * sqrt(1 + 1/n))``. Student's t with ``n - 1`` degrees of freedom carries the
  uncertainty of ``m`` and ``s`` estimated from few images, so the expected false-alarm rate of a new good part is
  the target whatever ``n`` is (exactly, for log-normal scores); with 10 images the bound simply lies further out.
  A plain empirical quantile cannot do this: below ``1 / target`` images it is the largest score, whatever the target.
  Where the scores' logs are right-skewed, their tail is heavier than the fitted normal's and the bound lies too low;
  the good scores themselves say so when more of them lie above it than a share ``target`` would but with
  probability 5% (one-sided binomial test). There, and only where there are enough of them (``(n + 1) * target >=
  1``), the threshold is their own ``(n + 1)(1 - target)``-th score, which a new good part exceeds with probability
  ``target`` whatever the distribution (exchangeability), and every prediction of a false-alarm rate for the
  category is read off the scores the same way (``benchmarks/threshold_rules.py`` measures the three rules).
- ``labelled_f1``: with labelled defect images (an MVTec AD ``test/`` split given as calibration data), the midpoint
  of the score gap where F1 on them is largest. Figures measured on the same images are optimistic, so the policy
  also records F1 cross-validated over folds of those images.
- ``manual``: a value a person set.

Whatever set it, :func:`describe` states what the good scores say of it: the false-alarm rate they predict (the
fitted log-normal's, or their own where they refute it at the category's target), and the fraction of good scores
above it with a 90% Clopper-Pearson interval (honest for small ``n``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats

DEFAULT_FALSE_ALARM_RATE = 0.03
INTERVAL = 0.90
MIN_GOOD_SCORES = 3
PER_IMAGE, PER_PART = "image", "part"  # whose false-alarm rate a target is: each image's, or each part's (any view)
HIGHEST_SHOWN = 10  # good images named by their good scores: the tail a threshold from good images rests on
PER_PART_NEEDS_VIEWS = (
    "a false-alarm rate per part needs good images that are views of parts (a set that names them, as Real-IAD's "
    "samples or KolektorSDD's folders, or file names that do, read by ingest's --part REGEX); each good image of "
    "this category is a part of its own"
)
TAIL_TEST = 0.05  # the significance at which the good scores above the log-normal bound refute it, on either side


def unreadable(good_scores: Sequence[float]) -> str | None:
    """Why ``good_scores`` cannot say how rare a score is among good parts (too few of them, or one that is not
    finite and positive, which no log-normal holds), or None where they can."""
    scores = np.asarray(good_scores, dtype=np.float64)
    if scores.size < MIN_GOOD_SCORES:
        return (
            f"{scores.size} good scores cannot estimate a false-alarm rate; at least {MIN_GOOD_SCORES} are needed "
            "(more training images, or set the threshold by value)"
        )
    if not np.all(np.isfinite(scores)) or scores.min() <= 0:
        return "good scores must be finite and positive"
    return None


def _log_scores(good_scores: Sequence[float]) -> np.ndarray:
    reason = unreadable(good_scores)
    if reason is not None:
        raise ValueError(reason)
    return np.log(np.asarray(good_scores, dtype=np.float64))


def check_per(per: str) -> None:
    if per not in (PER_IMAGE, PER_PART):
        raise ValueError(f"a false-alarm rate is per image or per part, not {per!r}")


def check_rate(rate: float) -> None:
    if not 0 < rate < 0.5:
        raise ValueError(f"a false-alarm rate must be between 0 and 0.5 (exclusive), got {rate}")


def _spread(logs: np.ndarray) -> tuple[float, float, float]:
    """(mean, standard deviation, predictive scale factor) of the log scores."""
    n = logs.size
    return float(logs.mean()), float(max(logs.std(ddof=1), 1e-12)), math.sqrt(1.0 + 1.0 / n)


def _log_normal_bound(logs: np.ndarray, target: float) -> float:
    mean, std, factor = _spread(logs)
    return math.exp(mean + std * factor * float(stats.t.ppf(1 - target, df=logs.size - 1)))


def log_normal_threshold(good_scores: Sequence[float], target: float) -> float:
    """The log-normal upper prediction bound at ``target`` alone, whatever the scores' tail (a rule to compare)."""
    return _log_normal_bound(_log_scores(good_scores), target)


def order_statistic(good_scores: Sequence[float], target: float) -> float:
    """The ``(n + 1)(1 - target)``-th of the ``n`` scores, interpolated: a new score exchangeable with them lies
    above it with probability ``target``, whatever their distribution."""
    return float(np.quantile(np.asarray(good_scores, dtype=np.float64), 1 - target, method="weibull"))


def _empirical_rate(ordered: np.ndarray, threshold: float) -> float:
    """The inverse of :func:`order_statistic`: where ``threshold`` falls among the ``n`` scores (``ordered``:
    sorted), as the share of ``n + 1`` places above it (``target`` at the order statistic for ``target``; above the
    largest, 1 / (n + 1), all that n scores can say of so far out)."""
    place = float(np.interp(threshold, ordered, np.arange(1, ordered.size + 1)))
    return (ordered.size + 1 - place) / (ordered.size + 1)


def refutes_log_normal(good_scores: Sequence[float], target: float = DEFAULT_FALSE_ALARM_RATE) -> bool:
    """Whether the good scores themselves refute the log-normal's bound at ``target``: more of them lie above it than
    a share ``target`` of them would but with probability ``TAIL_TEST``, or fewer (one-sided exact binomial tests,
    each at that level), and there are enough of them for the distribution-free order statistic (``(n + 1) * target
    >= 1``). Scores whose log is right-skewed have a heavier upper tail than the fitted normal, and the bound then
    lies too low (it spends more than the target); a left-skewed log, a lighter tail, puts it too high (it spends
    recall the target allows). The tests ask the scores in that very tail."""
    scores = np.asarray(good_scores, dtype=np.float64)
    return _refutation(scores, _log_normal_bound(_log_scores(scores), target), target) is not None


def _refutation(scores: np.ndarray, bound: float, target: float) -> str | None:
    """:func:`refutes_log_normal` with the bound at ``target`` already computed: ``"more"`` or ``"fewer"`` good
    scores above it than the target predicts, or ``None`` where they agree with it."""
    if (scores.size + 1) * target < 1:
        return None
    above = int((scores > bound).sum())
    if above > 0 and float(stats.binom.sf(above - 1, scores.size, target)) < TAIL_TEST:
        return "more"
    if float(stats.binom.cdf(above, scores.size, target)) < TAIL_TEST:
        return "fewer"
    return None


def good_tail(good_scores: Sequence[float], target: float = DEFAULT_FALSE_ALARM_RATE) -> Callable[[float], float]:
    """The share of good parts expected to score above a given score, read from the good scores the way the
    threshold is set from them at ``target`` (the category's): by the fitted log-normal with the uncertainty of its
    parameters (Student's t predictive distribution), or, where the good scores refute its bound at ``target``
    (:func:`refutes_log_normal`), by the good scores themselves (:func:`_empirical_rate`). Of a query's score it is
    a p-value against "this part is good": uniform for a new good part where the scores are log-normal, and never
    below ``1 / (n + 1)`` read from the scores alone, which is all ``n`` of them can say (conformal). The choice of
    model is made once, so a served answer pays only the reading."""
    logs = _log_scores(good_scores)
    scores = np.asarray(good_scores, dtype=np.float64)
    if _refutation(scores, _log_normal_bound(logs, target), target) is not None:
        ordered = np.sort(scores)
        return lambda score: _empirical_rate(ordered, score)
    mean, std, factor = _spread(logs)
    freedom = logs.size - 1
    return lambda score: 1.0 if score <= 0 else float(stats.t.sf((math.log(score) - mean) / (std * factor), freedom))


def part_p_value(views: int, smallest: float | None) -> float | None:
    """A part's p-value against "this part is good" from its ``views`` views' p-values, of which ``smallest`` is the
    least (None where a view has none): ``views * smallest``, at most 1. The union bound, so right whatever the views
    share (a part, a fixture, a lamp) and in whatever categories they were judged: each good view's p-value falls
    below ``t`` with probability ``t``, so a good part's least falls below ``t`` with probability at most ``views *
    t``. Exact for one view; for views as alike as copies it says up to ``views`` times too much, never too little."""
    return None if smallest is None else min(1.0, views * smallest)


def predicted_false_alarm_rate(
    good_scores: Sequence[float], threshold: float, target: float = DEFAULT_FALSE_ALARM_RATE
) -> float:
    """Probability that a new good part scores above ``threshold`` (:func:`good_tail`), the model
    :func:`false_alarm_threshold` sets the threshold by."""
    return good_tail(good_scores, target)(threshold)


def clopper_pearson(count: int, total: int, level: float = INTERVAL) -> tuple[float, float]:
    """Exact two-sided ``level`` interval of a rate observed as ``count`` of ``total``."""
    tail = (1 - level) / 2
    low = 0.0 if count == 0 else float(stats.beta.ppf(tail, count, total - count + 1))
    high = 1.0 if count == total else float(stats.beta.ppf(1 - tail, count + 1, total - count))
    return low, high


def describe(
    threshold: float,
    good_scores: Sequence[float],
    good_parts: Sequence[str | None] | None = None,
    target: float = DEFAULT_FALSE_ALARM_RATE,
) -> dict:
    """What the good scores say of ``threshold``: predicted and observed false-alarm rates, how many scores; and,
    where ``good_parts`` (the part of each score's image) has parts of several views, the same per part
    (``per_part``: each part by its worst view, as a line that rejects a part on any flagged view judges it).
    ``target``: the category's target, at which :func:`predicted_false_alarm_rate` chooses its model."""
    scores = np.asarray(good_scores, dtype=np.float64)
    above = int((scores > threshold).sum())
    low, high = clopper_pearson(above, scores.size)
    described = {
        "good_scores": int(scores.size),
        "estimated_false_alarm_rate": predicted_false_alarm_rate(scores, threshold, target),
        "good_scores_above": above,
        "observed_false_alarm_rate": above / scores.size,
        "observed_false_alarm_interval": [low, high],
        "interval_level": INTERVAL,
    }
    worst = worst_views(scores, good_parts) if good_parts is not None else None
    if worst is not None and worst.size >= MIN_GOOD_SCORES:
        described["per_part"] = {"parts": int(worst.size), **describe(threshold, worst, target=target)}
    return described


def part_numbers(parts: Sequence[str | None]) -> list[int]:
    """Each image's part as a number, in order of first appearance (``parts`` names each image's part): images named
    the same part share one, an image named none (``None``) is a part of its own."""
    numbers: dict[tuple[str | None, int], int] = {}
    return [
        numbers.setdefault((part, -1) if part is not None else (None, index), len(numbers))
        for index, part in enumerate(parts)
    ]


def views_by_part(parts: Sequence[str | None]) -> list[list[int]] | None:
    """The positions of each part's views (:func:`part_numbers`), in order of first appearance; ``None`` where no
    part has more than one image."""
    numbers = part_numbers(parts)
    groups: list[list[int]] = [[] for _ in range(max(numbers, default=-1) + 1)]
    for index, number in enumerate(numbers):
        groups[number].append(index)
    return None if all(len(views) == 1 for views in groups) else groups


def worst_views(scores: Sequence[float], parts: Sequence[str | None]) -> np.ndarray | None:
    """Each part's score, its worst view's (:func:`views_by_part`); ``None`` where every part has one image."""
    groups = views_by_part(parts)
    scores = np.asarray(scores, dtype=np.float64)
    return None if groups is None else np.array([scores[views].max() for views in groups])


def false_alarm_threshold(
    good_scores: Sequence[float],
    target: float = DEFAULT_FALSE_ALARM_RATE,
    good_parts: Sequence[str | None] | None = None,
    per: str = PER_IMAGE,
) -> tuple[float, dict]:
    """(threshold, policy): the log-normal upper prediction bound at ``target``, or where the good scores refute it
    (:func:`refutes_log_normal`) their own order statistic for ``target``; ``good_parts``: :func:`describe`.
    ``per`` ``part``: the target is the share of good parts flagged on any view, the bound taken over each training
    part's worst view (a line that rejects a part on any flagged view spends its target per part)."""
    check_rate(target)
    bounded = good_scores
    check_per(per)
    if per == PER_PART:
        bounded = worst_views(good_scores, good_parts) if good_parts is not None else None
        if bounded is None:
            raise ValueError(PER_PART_NEEDS_VIEWS)
    bound = _log_normal_bound(_log_scores(bounded), target)
    over = "each training part's worst view" if per == PER_PART else "the cross-fitted and held-out good scores"
    side = _refutation(np.asarray(bounded, dtype=np.float64), bound, target)
    if side is not None:
        threshold = order_statistic(bounded, target)
        method = (
            f"order statistic of {over} (distribution-free): {side} of them lay above the log-normal bound than the "
            "target predicts (binomial test, 5%)"
        )
    else:
        threshold = bound
        method = f"log-normal upper prediction bound (Student's t) of {over}"
    policy = {
        "kind": "false_alarm_rate",
        "target_false_alarm_rate": target,
        **({"per": PER_PART} if per == PER_PART else {}),
        "method": method,
        **describe(threshold, good_scores, good_parts, target),
    }
    return threshold, policy


def manual_threshold(
    value: float,
    good_scores: Sequence[float],
    good_parts: Sequence[str | None] | None = None,
    target: float = DEFAULT_FALSE_ALARM_RATE,
) -> tuple[float, dict]:
    """(value, policy) for a threshold a person set, with what the good scores say of it (``target``: the
    category's, :func:`describe`)."""
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"a threshold must be a positive finite number, got {value}")
    return value, {"kind": "manual", **describe(value, good_scores, good_parts, target)}


def _counts(scores: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[int, int, int]:
    predicted = scores > threshold
    return int((predicted & labels).sum()), int((predicted & ~labels).sum()), int((~predicted & labels).sum())


def f1_score(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    tp, fp, fn = _counts(scores, labels, threshold)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def candidate_thresholds(scores: np.ndarray) -> np.ndarray:
    """Every distinct verdict a threshold can give on ``scores``: below all, each gap's midpoint, above all."""
    values = np.unique(scores)
    middles = (values[1:] + values[:-1]) / 2
    return np.r_[values[0] - 1e-9, middles, values[-1] + 1e-9]


def best_f1(
    scores: Sequence[float], labels: Sequence[bool], max_false_alarm_rate: float | None = None
) -> tuple[float, float]:
    """(threshold, F1): the gap midpoint with the largest F1, optionally among the thresholds that keep the false
    alarms on the good images at or below ``max_false_alarm_rate``; ties go to the lowest threshold's gap."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    if not labels.any() or labels.all():
        raise ValueError("F1 needs both good and defective images")
    best = (math.inf, -1.0)
    for threshold in candidate_thresholds(scores):
        allowed = math.inf if max_false_alarm_rate is None else max_false_alarm_rate * (~labels).sum() + 1e-9
        if _counts(scores, labels, threshold)[1] > allowed:
            continue
        f1 = f1_score(scores, labels, threshold)
        if f1 > best[1]:
            best = (float(threshold), f1)
    return best


def cross_validated_f1(
    scores: Sequence[float],
    labels: Sequence[bool],
    folds: int = 5,
    seed: int = 0,
    max_false_alarm_rate: float | None = None,
) -> float:
    """F1 of thresholds chosen by :func:`best_f1` (within ``max_false_alarm_rate``) on the other folds, counted on
    each held-out fold (stratified): what the labelled-defect threshold is worth on images it did not see."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    rng = np.random.default_rng(seed)
    fold_of = np.empty(scores.size, dtype=np.int64)
    for value in (False, True):
        members = rng.permutation(np.flatnonzero(labels == value))
        fold_of[members] = np.arange(members.size) % folds
    tp = fp = fn = 0
    for fold in range(folds):
        held = fold_of == fold
        if not held.any() or labels[~held].all() or not labels[~held].any():
            continue
        threshold, _ = best_f1(scores[~held], labels[~held], max_false_alarm_rate)
        a, b, c = _counts(scores[held], labels[held], threshold)
        tp, fp, fn = tp + a, fp + b, fn + c
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


Rule = Callable[[np.ndarray, float], float]
"""A threshold rule: (good scores, target false-alarm rate) -> threshold."""


def _served_rule(good_scores: np.ndarray, target: float) -> float:
    return false_alarm_threshold(good_scores, target)[0]


class BarChances(NamedTuple):
    """Over re-dealt draws of the good test parts (:func:`bar_chances`): how often the bar is met, and the mean F1,
    of the false-alarm rule and of an oracle, beside the mean of the yardstick itself; and the rule's mean
    false-alarm rate on the draws, which is what it really spends where the exchangeability holds."""

    rule: float
    oracle: float
    rule_f1: float
    oracle_f1: float
    yardstick_f1: float
    rule_false_alarm_rate: float


def bar_chances(
    good_scores: Sequence[float],
    test_scores: Sequence[float],
    test_labels: Sequence[bool],
    target: float,
    within: float = 0.03,
    max_false_alarm_rate: float = 0.05,
    rounds: int = 400,
    seed: int = 0,
    rule: Rule | None = None,
) -> BarChances:
    """How often a threshold at ``target`` meets the bar "F1 within ``within`` of the best F1 that
    keeps false alarms within ``max_false_alarm_rate``, with no more false alarms than that" over other draws of the
    good test parts, keeping the defective ones.

    One test set is one draw of good parts, and near the bar a single good part more or less above the threshold
    moves F1 by more than ``within`` wherever defects crowd just above the good parts. The false-alarm rule rests on
    the good training scores (cross-fitted) and new good parts' scores coming from one distribution; if they do, the
    two are exchangeable, so each round deals the pooled good scores again into a training part and a test part of
    the original sizes, sets the threshold from the training part (:func:`false_alarm_threshold`) and judges it on
    the test part with the same defects; ``rule`` (good scores, target -> threshold) judges another rule the same way.
    The oracle's threshold is the pooled good scores' own ``1 - target``
    quantile, what a rule that knew the good parts' distribution exactly would set (a reference, not a bound: one
    fixed threshold can fare worse than a rule's varying one). When even the oracle rarely meets the bar, the bar
    measures the draw of good test parts, not the rule. The mean F1s say what each costs in expectation, and how
    far the yardstick's choice on the test images themselves lifts it above any threshold fixed beforehand."""
    test_scores = np.asarray(test_scores, dtype=np.float64)
    test_labels = np.asarray(test_labels, dtype=bool)
    defective = test_scores[test_labels]
    pool = np.concatenate([np.asarray(good_scores, dtype=np.float64), test_scores[~test_labels]])
    training = len(good_scores)
    labels = np.concatenate([np.zeros(pool.size - training, dtype=bool), np.ones(defective.size, dtype=bool)])
    oracle = float(np.quantile(pool, 1 - target))
    allowed = max_false_alarm_rate * (pool.size - training) + 1e-9
    rule = rule or _served_rule
    rng = np.random.default_rng(seed)
    met, f1, spent = np.zeros(2), np.zeros(3), 0.0
    for _ in range(rounds):
        order = rng.permutation(pool.size)
        scores = np.concatenate([pool[order[training:]], defective])
        yardstick = best_f1(scores, labels, max_false_alarm_rate)[1]
        f1[2] += yardstick
        for i, threshold in enumerate((rule(pool[order[:training]], target), oracle)):
            _, fp, _ = _counts(scores, labels, threshold)
            value = f1_score(scores, labels, threshold)
            f1[i] += value
            met[i] += fp <= allowed and value >= yardstick - within
            if i == 0:
                spent += fp / (pool.size - training)
    return BarChances(*(met / rounds).tolist(), *(f1 / rounds).tolist(), spent / rounds)


def labelled_threshold(
    scores: Sequence[float],
    labels: Sequence[bool],
    good_scores: Sequence[float],
    good_parts: Sequence[str | None] | None = None,
    target: float = DEFAULT_FALSE_ALARM_RATE,
) -> tuple[float, dict]:
    """(threshold, policy) maximising F1 on labelled images; ``good_scores`` (cross-fitted) describe it."""
    threshold, f1 = best_f1(scores, labels)
    labels = np.asarray(labels, dtype=bool)
    return threshold, {
        "kind": "labelled_f1",
        "labelled_images": int(labels.size),
        "labelled_defects": int(labels.sum()),
        "f1_on_labelled_images": f1,
        "f1_cross_validated": cross_validated_f1(scores, labels),
        "note": "F1 on the labelled images is optimistic (they set the threshold); the cross-validated F1 is not",
        **describe(threshold, good_scores, good_parts, target),
    }


def operating_point(
    scores: Sequence[float],
    labels: Sequence[bool],
    threshold: float,
    target: float,
    good_scores: Sequence[float] | None = None,
) -> dict:
    """Evaluation figures at ``threshold``, beside the best any threshold reaches on the same scores, and the best
    that keeps false alarms on the good images within ``target``: the gap is always visible (a split of one kind of
    image has neither, and ``None`` for the rates it cannot measure). The calibration too:
    the false-alarm rate observed on the good test images with its interval, beside the rate the ``good_scores``
    (the training images scored as unseen) predict for the threshold; and how many good test images score above the
    good scores' median, half of them where new good parts score as the good images did unseen."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    tp, fp, fn = _counts(scores, labels, threshold)
    good, defective = int((~labels).sum()), int(labels.sum())
    figures = {  # what a split without good (or defective) images cannot measure is None, not a zero
        "precision": (tp / (tp + fp) if tp + fp else 0.0) if defective else None,
        "recall": tp / defective if defective else None,
        "f1": (2 * tp / (2 * tp + fp + fn) if tp else 0.0) if defective else None,
        "false_alarms": fp,
        "false_alarm_rate": fp / good if good else None,
        "missed_defects": fn,
        "defective_images": tp + fn,
        "good_images": good,
        "false_alarm_target": target,
        "false_alarm_interval": list(clopper_pearson(fp, good)) if good else None,
        "predicted_false_alarm_rate": (
            predicted_false_alarm_rate(good_scores, threshold, target) if good_scores is not None else None
        ),
    }
    if good and good_scores is not None:  # half above the good scores' median, which drift's body check rests on
        above = int((scores[~labels] > np.median(good_scores)).sum())
        figures["good_above_good_median"] = {
            "count": above, "of": good, "share": above / good, "interval": list(clopper_pearson(above, good)),
        }  # fmt: skip
    if labels.any() and not labels.all():
        figures["best_f1_threshold"], figures["best_f1"] = best_f1(scores, labels)
        figures["best_f1_within_target"] = best_f1(scores, labels, target)[1]
    return figures
