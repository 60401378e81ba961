"""The threshold policy on score distributions whose quantiles are known, and the F1 yardsticks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from patchcore import threshold


def _lognormal(n: int, seed: int, sigma: float = 0.15) -> np.ndarray:
    return np.exp(np.random.default_rng(seed).normal(0.1, sigma, n))


def test_many_good_scores_give_the_true_quantile():
    value, policy = threshold.false_alarm_threshold(_lognormal(20_000, 0), 0.02)
    assert value == pytest.approx(math.exp(0.1 + 0.15 * stats.norm.ppf(0.98)), rel=0.01)
    assert policy["kind"] == "false_alarm_rate" and policy["good_scores"] == 20_000
    assert policy["estimated_false_alarm_rate"] == pytest.approx(0.02, abs=1e-6)
    assert policy["observed_false_alarm_rate"] == pytest.approx(0.02, abs=0.004)


def test_few_good_scores_keep_the_false_alarm_rate_on_average():
    """Over many samples of 10 good scores, a new good part exceeds the threshold 2% of the time, as asked; the
    empirical quantile of 10 scores (their maximum) would let about 9% through."""
    true = stats.norm(0.1, 0.15)
    rates = [true.sf(math.log(threshold.false_alarm_threshold(_lognormal(10, seed), 0.02)[0])) for seed in range(4000)]
    assert np.mean(rates) == pytest.approx(0.02, abs=0.002)
    maxima = [true.sf(math.log(_lognormal(10, seed).max())) for seed in range(4000)]
    assert np.mean(maxima) > 0.08


def _thousand_fits(true) -> tuple[float, float, list[tuple[np.ndarray, float, dict]]]:
    """1,000 samples of 300 good scores whose logs follow ``true``, each thresholded at 3%: the mean false-alarm rate
    the served rule spends on new good parts, the mean the log-normal bound alone spends, and each (scores,
    threshold, policy)."""
    served, bound, fits = [], [], []
    for seed in range(1000):
        scores = np.exp(true.rvs(300, random_state=seed))
        value, policy = threshold.false_alarm_threshold(scores, 0.03)
        served.append(true.sf(math.log(value)))
        bound.append(true.sf(math.log(threshold.log_normal_threshold(scores, 0.03))))
        fits.append((scores, value, policy))
    return float(np.mean(served)), float(np.mean(bound)), fits


def test_a_new_good_parts_p_value_is_uniform_so_its_share_below_any_level_is_that_level():
    """The p-value a served answer gives (:func:`threshold.good_tail`) of a new good part, over 4,000 draws of 30 good
    scores and one part more: below a level with the probability of that level (log-normal scores: the Student's t
    predictive distribution is exact), so "1 good part in 10,000 scores this high" means that; on scores that refute
    the log-normal it is the conformal p-value, never below the level's share by more than chance, and at least
    ``1 / (n + 1)``. The same reading gives the threshold's predicted rate."""
    rng = np.random.default_rng(0)
    normal = [threshold.good_tail(_lognormal(30, seed), 0.03)(float(np.exp(rng.normal(0.1, 0.15)))) for seed in
              range(4000)]  # fmt: skip
    for level in (0.03, 0.1, 0.5):  # within 3.5 standard errors of a share of 4,000
        assert np.mean(np.array(normal) < level) == pytest.approx(
            level, abs=3.5 * math.sqrt(level * (1 - level) / 4000)
        )
    heavy = stats.expon(scale=0.2)
    values = []
    for seed in range(1000):
        scores = np.exp(heavy.rvs(300, random_state=seed))
        new = float(np.exp(heavy.rvs(1, random_state=10_000 + seed))[0])
        tail = threshold.good_tail(scores, 0.03)
        values.append(tail(new))
        assert tail(scores.max() * 2) == pytest.approx(1 / 301) or not threshold.refutes_log_normal(scores, 0.03)
    assert np.mean(np.array(values) <= 0.03) <= 0.03 + 0.012
    scores = _lognormal(200, 5)
    tail = threshold.good_tail(scores, 0.03)
    value = threshold.false_alarm_threshold(scores, 0.03)[0]
    assert tail(value) == pytest.approx(0.03) == threshold.predicted_false_alarm_rate(scores, value, 0.03)
    assert tail(value * 1.01) < 0.03 < tail(value * 0.99) and tail(0.0) == 1.0


def test_a_parts_p_value_over_its_views_is_a_p_value_whatever_the_views_share():
    """A good part of three views (log scores sharing a part effect, correlation 0.5, each view's marginal the good
    scores'), read by each view's p-value against 300 good scores: its p-value (:func:`threshold.part_p_value`) falls
    below a level at most as often as the level, where the rarest view's p-value alone would fall below it about
    twice as often; for views that are copies it is the views times too large; for one view it is the view's."""
    rng = np.random.default_rng(1)
    parts, rarest = [], []
    for seed in range(2000):
        tail = threshold.good_tail(_lognormal(300, seed), 0.03)
        shared = rng.normal(0, 0.15 * math.sqrt(0.5))
        views = [tail(float(np.exp(0.1 + shared + rng.normal(0, 0.15 * math.sqrt(0.5))))) for _ in range(3)]
        parts.append(threshold.part_p_value(3, min(views)))
        rarest.append(min(views))
    for level in (0.03, 0.1):
        assert np.mean(np.array(parts) <= level) <= level + 3.5 * math.sqrt(level * (1 - level) / 2000)
        assert np.mean(np.array(rarest) <= level) > 1.5 * level
    assert threshold.part_p_value(3, 0.01) == pytest.approx(0.03) and threshold.part_p_value(1, 0.2) == 0.2
    assert threshold.part_p_value(4, 0.5) == 1.0 and threshold.part_p_value(2, None) is None


def test_a_tail_heavier_than_the_log_normal_is_caught_by_the_good_scores_themselves():
    """Good scores whose logs are right-skewed (here exponential: skewness 2) have a heavier tail than the fitted
    log-normal, whose bound then lets through far more than its target; more of the good scores lie above it than
    chance allows, so the rule takes their own order statistic, which spends the target whatever the distribution.
    On log-normal scores the tests rarely fire (their level, 5% on either side) and the bound stands."""
    served, bound, fits = _thousand_fits(stats.expon(scale=0.2))
    switched = 0
    for scores, value, policy in fits:
        if policy["method"].startswith("order statistic"):
            switched += 1
            assert policy["estimated_false_alarm_rate"] == pytest.approx(0.03, abs=1e-9)
            assert threshold.predicted_false_alarm_rate(scores, value, 0.03) == pytest.approx(0.03, abs=1e-9)
    assert bound > 0.04  # the log-normal alone overspends here
    assert switched > 800 and served == pytest.approx(0.03, abs=0.004)
    kept = [threshold.false_alarm_threshold(_lognormal(300, seed), 0.03)[1]["method"] for seed in range(400)]
    assert sum(m.startswith("order statistic") for m in kept) < 0.09 * len(kept)


def test_a_tail_lighter_than_the_log_normal_is_caught_too():
    """Good scores whose logs are left-skewed (a skew-normal of shape -4) have a lighter tail than the fitted
    log-normal, whose bound then lies far out: it lets through a tenth of its target and gives up the recall the
    target allows, as a threshold above nearly every good part did on sets never seen. Too few of the good scores lie
    above it, so the rule takes their order statistic, which spends the target."""
    served, bound, fits = _thousand_fits(stats.skewnorm(-4, scale=0.3))
    fewer = sum(policy["method"].startswith("order statistic") and "fewer of them" in policy["method"]
                for _, _, policy in fits)  # fmt: skip
    assert bound < 0.006  # the log-normal alone underspends here
    assert fewer > 900 and served == pytest.approx(0.03, abs=0.004)


def test_where_the_scores_refute_the_bound_every_threshold_is_read_off_the_scores_themselves():
    """A threshold set by hand on such scores is described as the rule sets one: by its place among the n scores,
    out of n + 1 (the target exactly at the order statistic, 1 / (n + 1) above the largest, n / (n + 1) below the
    smallest, falling in between); on log-normal scores by the log-normal, as before."""
    scores = np.exp(stats.expon(scale=0.2).rvs(300, random_state=7))
    assert threshold.refutes_log_normal(scores, 0.03)
    order = threshold.order_statistic(scores, 0.03)
    assert threshold.predicted_false_alarm_rate(scores, order, 0.03) == pytest.approx(0.03)
    assert threshold.manual_threshold(scores.max() * 2, scores, target=0.03)[1]["estimated_false_alarm_rate"] == (
        pytest.approx(1 / 301)
    )
    assert threshold.predicted_false_alarm_rate(scores, scores.min() / 2, 0.03) == pytest.approx(300 / 301)
    grid = np.linspace(scores.min(), scores.max(), 50)
    assert np.all(np.diff([threshold.predicted_false_alarm_rate(scores, t, 0.03) for t in grid]) <= 0)
    normal = _lognormal(300, 3)
    assert not threshold.refutes_log_normal(normal, 0.03)
    value = float(np.median(normal))
    assert threshold.predicted_false_alarm_rate(normal, value, 0.03) == pytest.approx(0.5, abs=0.05)
    assert threshold.manual_threshold(value, normal)[1]["estimated_false_alarm_rate"] != pytest.approx(
        float(np.mean(normal > value)), abs=1e-9
    )  # the fitted log-normal's, not the share above


def test_ten_good_scores_state_their_uncertainty():
    scores = _lognormal(10, 1)
    value, policy = threshold.false_alarm_threshold(scores, 0.02)
    assert value > scores.max()
    assert policy["good_scores_above"] == 0
    low, high = policy["observed_false_alarm_interval"]
    assert low == 0.0 and high == pytest.approx(1 - 0.05 ** (1 / 10))  # 0 of 10 is compatible with up to 26%


def test_too_few_or_bad_scores_and_rates_are_refused():
    with pytest.raises(ValueError, match="at least 3"):
        threshold.false_alarm_threshold([1.0, 1.1], 0.02)
    with pytest.raises(ValueError, match=r"between 0 and 0\.5"):
        threshold.false_alarm_threshold([1.0, 1.1, 1.2], 0.7)
    with pytest.raises(ValueError, match="positive"):
        threshold.manual_threshold(-1.0, [1.0, 1.1, 1.2])


def test_manual_threshold_is_described_by_the_good_scores():
    scores = np.arange(1, 101) / 100 + 1.0
    value, policy = threshold.manual_threshold(1.955, scores)
    assert value == 1.955 and policy["kind"] == "manual"
    assert policy["good_scores_above"] == 5 and policy["observed_false_alarm_rate"] == 0.05
    low, high = policy["observed_false_alarm_interval"]
    assert low < 0.05 < high


def test_best_f1_and_the_best_within_a_false_alarm_target():
    scores = np.array([0.1, 0.2, 0.3, 0.9, 0.4, 0.5, 0.8, 1.0])
    labels = np.array([False, False, False, False, True, True, True, True])
    value, f1 = threshold.best_f1(scores, labels)
    assert 0.3 < value < 0.4 and f1 == pytest.approx(8 / 9)  # all 4 defects, 1 false alarm
    value, f1 = threshold.best_f1(scores, labels, max_false_alarm_rate=0.0)
    assert 0.9 < value < 1.0 and f1 == pytest.approx(2 / 5)  # only 1.0 is caught without a false alarm
    figures = threshold.operating_point(scores, labels, 0.35, 0.25)
    assert figures["false_alarms"] == 1 and figures["recall"] == 1.0 and figures["f1"] == pytest.approx(8 / 9)
    assert figures["best_f1_within_target"] == pytest.approx(8 / 9)
    assert "good_above_good_median" not in figures  # no good scores: no median to check against
    good = _lognormal(200, 1)
    middle = float(np.median(good))
    tested = np.array([0.9, 0.95, 1.05, 1.1, 1.2, 3.0, 4.0]) * middle
    figures = threshold.operating_point(tested, np.array([False] * 5 + [True] * 2), 2.0 * middle, 0.03, good)
    above = figures["good_above_good_median"]
    assert (above["count"], above["of"], above["share"]) == (3, 5, 0.6) and above["interval"][0] < 0.5


def test_a_part_seen_by_several_cameras_is_judged_by_its_worst_view_and_again_at_a_new_threshold():
    """Per part (Real-IAD's samples of five views): a part scores its worst view, is defective when any view is,
    and a good part is flagged when any view is; a stored evaluation judged at another threshold judges its parts
    again; a set of one view per part has no part figures."""
    from types import SimpleNamespace

    from patchcore.evaluation import part_figures
    from revisions.threshold import evaluation_at

    scores = [0.1, 0.6, 0.2, 0.3, 0.9, 0.2, 0.55, 0.1]  # 4 parts of 2 views
    labels = [False, False, False, False, True, False, False, True]
    parts = ["a", "a", "b", "b", "c", "c", "d", "d"]
    figures = part_figures(scores, labels, parts, 0.5, 0.05)
    assert (figures["parts"], figures["views_per_part"], figures["good_images"]) == (4, 2.0, 2)
    assert figures["part_auroc"] == 0.75  # worst views: a 0.6, b 0.3 good; c 0.9, d 0.55 defective
    assert figures["false_alarms"] == 1 and figures["recall"] == 1.0  # part a, flagged by its good view 0.6
    assert part_figures(scores, labels, [None] * 8, 0.5, 0.05) is None
    assert part_figures(scores, labels, list("abcdefgh"), 0.5, 0.05) is None
    rows = [
        {"score": v, "defect": "AK" if bad else "good", "part": p}
        for v, bad, p in zip(scores, labels, parts, strict=True)
    ]
    stored = SimpleNamespace(evaluation={"images": rows, "parts": figures, "threshold": 0.5})
    again = evaluation_at(stored, 0.65, 0.05, False, [0.2, 0.3, 0.25])["parts"]
    assert again["false_alarms"] == 0 and again["recall"] == 0.5 and again["part_auroc"] == 0.75  # d missed


def test_labelled_threshold_separates_and_says_its_figure_is_optimistic():
    rng = np.random.default_rng(0)
    scores = np.r_[rng.normal(1.0, 0.05, 30), rng.normal(2.0, 0.05, 30)]
    labels = np.r_[np.zeros(30, bool), np.ones(30, bool)]
    value, policy = threshold.labelled_threshold(scores, labels, scores[:30])
    assert scores[:30].max() < value < scores[30:].min()
    assert policy["f1_on_labelled_images"] == 1.0 and policy["f1_cross_validated"] == 1.0
    assert "optimistic" in policy["note"]


def test_a_category_of_ten_real_images_gets_a_sane_threshold_with_its_uncertainty(small_train):
    from patchcore.images import open_image
    from patchcore.model import Embedder, PatchCoreConfig, fit
    from tests.conftest import BOTTLE, WEIGHTS

    config = PatchCoreConfig(backbone="resnet18")
    embedder = Embedder.load(config, str(WEIGHTS))
    model = fit(config, small_train[:10], str(WEIGHTS), embedder=embedder)
    policy = model.threshold_policy
    assert policy["good_scores"] == 10  # 9 out of fold + 1 held out
    assert policy["target_false_alarm_rate"] == threshold.DEFAULT_FALSE_ALARM_RATE
    assert math.isfinite(model.threshold) and model.threshold > np.median(model.good_scores)
    assert policy["observed_false_alarm_interval"][1] > 0.2  # ten scores cannot show a rate below a few percent

    def score(path):
        return model.score(embedder.features(config.preprocess.tensor(open_image(path))[None])[0]).score

    assert score(BOTTLE / "test" / "broken_large" / "000.png") > model.threshold
    assert score(BOTTLE / "test" / "good" / "000.png") < model.threshold


def test_cross_validated_f1_keeps_the_false_alarm_cap_on_every_fold():
    """Two good parts score far above every defect: a threshold that may not flag any good training image must sit
    above them on the folds that hold them, and misses that fold's defects, where an uncapped one does not."""
    goods = np.concatenate([np.linspace(0.0, 0.47, 48), [10.0, 10.1]])
    defects = np.linspace(1.0, 1.49, 50)
    scores = np.concatenate([goods, defects])
    labels = np.concatenate([np.zeros(50, bool), np.ones(50, bool)])
    uncapped = threshold.cross_validated_f1(scores, labels)
    capped = threshold.cross_validated_f1(scores, labels, max_false_alarm_rate=0.0)
    assert uncapped > 0.97
    assert capped < uncapped - 0.2


def test_bar_chances_with_clear_defects_are_the_chance_of_few_false_alarms():
    rng = np.random.default_rng(3)
    good = np.exp(rng.normal(0.0, 0.1, 200))
    test = np.concatenate([np.exp(rng.normal(0.0, 0.1, 50)), np.full(50, 10.0)])
    labels = np.r_[np.zeros(50, dtype=bool), np.ones(50, dtype=bool)]
    chances = threshold.bar_chances(good, test, labels, 0.03)
    rule, oracle = chances.rule, chances.oracle
    # every defect is caught at any threshold near the good tail: the bar fails only on more than 2 false alarms in
    # the 50 good test parts, which for the oracle is a hypergeometric draw from the 250 pooled good scores
    pool = np.concatenate([good, test[:50]])
    above = int((pool > np.quantile(pool, 0.97)).sum())
    assert oracle == pytest.approx(stats.hypergeom(250, above, 50).cdf(2), abs=0.06)
    assert abs(rule - oracle) < 0.12
    # nothing is missed, so F1 falls only by false alarms: 100 / 101 with one of them
    assert chances.yardstick_f1 == 1.0 and 0.98 < chances.rule_f1 < 1.0 and 0.98 < chances.oracle_f1 < 1.0
    assert threshold.bar_chances(good, test, labels, 0.03) == chances


def test_bar_chances_are_low_where_defects_crowd_the_good_tail():
    rng = np.random.default_rng(4)
    good = np.exp(rng.normal(0.0, 0.1, 200))
    test = np.exp(np.concatenate([rng.normal(0.0, 0.1, 50), rng.normal(0.15, 0.1, 50)]))
    labels = np.r_[np.zeros(50, dtype=bool), np.ones(50, dtype=bool)]
    crowded = threshold.bar_chances(good, test, labels, 0.03)
    clear = threshold.bar_chances(good, np.where(labels, test * 3, test), labels, 0.03)
    assert crowded.oracle < 0.5 and crowded.rule < 0.5
    assert clear.oracle > crowded.oracle + 0.3
    # the yardstick chooses its threshold on each draw itself, so it stands above any threshold fixed beforehand
    assert crowded.yardstick_f1 > max(crowded.rule_f1, crowded.oracle_f1) + 0.03


def test_bar_chances_measure_what_a_rule_spends_where_the_log_normal_bound_does_not_hold():
    # log scores skewed to the right, as on the real sets: the log-normal bound alone lies too low and spends more
    # than its target, the (n + 1)(1 - target)-th score spends the target whatever the distribution, and the served
    # rule, which takes the latter where the good scores refute the former, spends less than the bound alone
    rng = np.random.default_rng(5)
    good = np.exp(rng.gamma(2.0, 0.05, 200))
    test = np.concatenate([np.exp(rng.gamma(2.0, 0.05, 50)), np.full(50, 10.0)])
    labels = np.r_[np.zeros(50, dtype=bool), np.ones(50, dtype=bool)]
    served = threshold.bar_chances(good, test, labels, 0.03)
    bound = threshold.bar_chances(good, test, labels, 0.03, rule=threshold.log_normal_threshold)
    ordered = threshold.bar_chances(good, test, labels, 0.03, rule=threshold.order_statistic)
    assert ordered.rule_false_alarm_rate == pytest.approx(0.03, abs=0.004)
    assert bound.rule_false_alarm_rate > 0.036
    assert ordered.rule_false_alarm_rate < served.rule_false_alarm_rate < bound.rule_false_alarm_rate
    # the oracle does not depend on the rule judged beside it
    assert served.oracle == ordered.oracle and served.oracle_f1 == ordered.oracle_f1


def test_views_of_one_part_are_scored_together_as_a_new_part_is(small_train, tmp_path):
    """Each of 12 parts photographed twice (two files of one image). Dealt by image, a view is scored with its twin
    in the bank: its good score falls below every score a new part gets, and so does the threshold. Dealt by part
    (``parts``), both views share the hold-out or a fold, so twins score alike and as a fit without twins scores
    its images as unseen."""
    from patchcore.model import Embedder, PatchCoreConfig, fit
    from tests.conftest import WEIGHTS

    train, parts = [], {}
    for path in small_train:
        for view in "ab":
            train.append(tmp_path / f"{view}_{path.name}")
            train[-1].symlink_to(path)
            parts[train[-1]] = path.stem
    config = PatchCoreConfig(backbone="resnet18")
    embedder = Embedder.load(config, str(WEIGHTS))
    by_image = fit(config, train, str(WEIGHTS), embedder=embedder)
    by_part = fit(config, train, str(WEIGHTS), embedder=embedder, parts=parts)
    unseen = fit(config, small_train, str(WEIGHTS), embedder=embedder)
    assert (by_image.parts, by_part.parts) == (None, 12)
    scored = {r.file_name: (r.split, r.score) for r in by_part.images}
    for path in small_train:
        (split_a, score_a), (split_b, score_b) = scored[f"a_{path.name}"], scored[f"b_{path.name}"]
        assert split_a == split_b and score_a == pytest.approx(score_b, rel=1e-5)
    assert np.median(by_image.good_scores) < min(by_part.good_scores)
    assert by_image.threshold < np.median(by_part.good_scores)
    assert abs(math.log(np.median(by_part.good_scores) / np.median(unseen.good_scores))) < 0.1


def test_a_threshold_is_described_per_part_by_each_parts_worst_view():
    """Scores of parts of several views: the policy adds what the threshold does per part (each by its worst view),
    which flags more good parts than images; scores of one view each, or too few parts, add nothing."""
    scores = _lognormal(300, 2)
    parts = [f"p{i // 5}" for i in range(300)]  # 60 parts of 5 views
    value, policy = threshold.false_alarm_threshold(scores, 0.03, parts)
    worst = scores.reshape(60, 5).max(1)
    per_part = policy["per_part"]
    assert per_part["parts"] == 60 and per_part["good_scores_above"] == int((worst > value).sum())
    assert per_part["estimated_false_alarm_rate"] == pytest.approx(threshold.predicted_false_alarm_rate(worst, value))
    assert 0.06 < per_part["estimated_false_alarm_rate"] < 0.3  # a part of 5 views risks more than one view
    assert "per_part" not in threshold.false_alarm_threshold(scores, 0.03, [None] * 300)[1]
    assert "per_part" not in threshold.manual_threshold(1.2, scores[:4], ["a", "a", "b", "b"])[1]  # two parts
    assert threshold.manual_threshold(1.2, scores, parts)[1]["per_part"]["parts"] == 60


def test_a_target_per_part_is_spent_on_each_parts_worst_view():
    """A target per part sets the bound over each part's worst view, so the share of good parts predicted flagged
    on any view is the target itself, and each view's share is smaller; without parts of several views, or for
    another kind of target, it is refused."""
    scores = _lognormal(300, 3)
    parts = [f"p{i // 5}" for i in range(300)]
    per_image, _ = threshold.false_alarm_threshold(scores, 0.03, parts)
    value, policy = threshold.false_alarm_threshold(scores, 0.03, parts, per="part")
    assert value > per_image and policy["per"] == "part" and "worst view" in policy["method"]
    assert policy["per_part"]["estimated_false_alarm_rate"] == pytest.approx(0.03)
    assert policy["estimated_false_alarm_rate"] < 0.03
    with pytest.raises(ValueError, match="needs good images that are views of parts"):
        threshold.false_alarm_threshold(scores, 0.03, None, per="part")
    with pytest.raises(ValueError, match="per image or per part"):
        threshold.false_alarm_threshold(scores, 0.03, parts, per="sample")


def test_a_served_p_value_is_none_only_where_the_good_scores_cannot_say():
    """The served category's p-values read its good scores: none where there are too few or one is not finite and
    positive (the refusals ``threshold.unreadable`` names), the threshold's own reading otherwise."""
    from serving.inspector import good_tail

    assert good_tail([1.0, 1.2], 0.03) is None and good_tail([1.0, 0.0, 1.2, 1.1], 0.03) is None
    assert good_tail([1.0, float("inf"), 1.2, 1.1], 0.03) is None
    scores = [1.0, 1.2, 1.1, 0.9]
    assert (
        good_tail(scores, 0.03)(1.15) == threshold.good_tail(scores, 0.03)(1.15)
        and 0 < good_tail(scores, 0.03)(1.15) < 1
    )
