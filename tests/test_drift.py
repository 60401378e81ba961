"""The false-alarm rate as the reviews say (``serving.drift.reviewed``), on simulated windows of a line whose true
rates are known: its interval holds the true share of good parts flagged at least as often as it promises, and its
estimate is centred on it. And the passed parts against the good scores' median (``serving.drift.body``): quiet on a
calibrated line, its defects included, and quick to see the whole line shift. And no warning that one answer's
outcome decides (``serving.drift.outside``)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.drift_warnings import answers as simulated
from patchcore.threshold import clopper_pearson
from serving.drift import body, drift, outside, pooled_rate, reviewed
from store.inspections import Hour


def _window(rng: np.random.Generator, answers: int, defects: float, false_alarm: float, recall: float,
            review_flagged: float, review_passed: float) -> Hour:  # fmt: skip
    """One window of a line: each part defective with probability ``defects``, flagged with ``recall`` if so and
    ``false_alarm`` if good; each flagged answer reviewed with ``review_flagged``, each passed one ``review_passed``."""
    defective = rng.random(answers) < defects
    flagged = rng.random(answers) < np.where(defective, recall, false_alarm)
    looked = rng.random(answers) < np.where(flagged, review_flagged, review_passed)
    return Hour("2026-12-03T06:00Z", answers, int(flagged.sum()), int((flagged & looked).sum()),
            int((flagged & looked & ~defective).sum()), int((~flagged & looked).sum()),
            int((~flagged & looked & defective).sum()))  # fmt: skip


@pytest.mark.parametrize(
    ("answers", "defects", "false_alarm", "recall", "review_flagged", "review_passed"),
    [
        (2000, 0.05, 0.03, 0.8, 1.0, 0.0),  # every reject reviewed, no pass: exact
        (500, 0.01, 0.01, 0.5, 1.0, 0.0),  # the same, few rejects
        (5000, 0.02, 0.005, 0.8, 0.3, 0.0),  # a third of the rejects reviewed
        (2000, 0.05, 0.03, 0.8, 0.2, 0.05),  # a fifth of the rejects reviewed, a few passes audited
        (300, 0.10, 0.05, 0.9, 0.1, 0.02),  # a small window, few reviews
    ],
)
def test_the_reviewed_false_alarm_rate_holds_the_true_one(
    answers, defects, false_alarm, recall, review_flagged, review_passed
):
    rng = np.random.default_rng(0)
    covered, runs, estimates = 0, 0, []
    for _ in range(1000):
        said = reviewed([_window(rng, answers, defects, false_alarm, recall, review_flagged, review_passed)], 0.5)
        if said is None or said["interval"] is None:  # no reject reviewed: nothing said
            continue
        runs += 1
        low, high = said["interval"]
        covered += low <= false_alarm <= high
        if said["false_alarm_rate"] is not None:
            estimates.append(said["false_alarm_rate"])
    # 90% promised: 950 windows at a true 90% fall below 88% with probability 2%
    assert runs >= 950 and covered / runs >= 0.88
    # centred: without reviews of passes the estimate counts the defects passed as good parts, which lowers it by
    # about a share defects * (1 - recall) of the good parts (1% at most here)
    assert np.mean(estimates) == pytest.approx(false_alarm, rel=0.1)


def test_without_reviews_there_is_nothing_to_say_and_one_review_gives_no_warning():
    assert reviewed([Hour("h", 100, 10, 0, 0, 0, 0)], 0.03) is None
    one = reviewed([Hour("h", 100, 10, 1, 1, 0, 0)], 0.03)  # one rejected part, found good
    assert one["false_alarm_rate"] == pytest.approx(10 / 100)  # all 10 flagged good, 90 passed good
    assert one["interval"][0] < 0.03 < one["interval"][1] and one["warning"] is False
    passes_only = reviewed([Hour("h", 100, 10, 0, 0, 20, 1)], 0.03)  # no reject reviewed: the rate may be anything
    assert passes_only["false_alarm_rate"] is None and passes_only["interval"] is None
    assert passes_only["warning"] is False and passes_only["passed_found_defective"] == 1
    many = reviewed([Hour("h", 1000, 200, 200, 150, 100, 0)], 0.03)  # 150 of 1,000 good parts flagged: far above 3%
    assert many["false_alarm_rate"] == pytest.approx(150 / 950) and many["warning"] is True


def test_a_warning_is_not_decided_by_one_answer():
    """An empty window's first answer flagged (1 of 1, 90% interval 5%-100%) lies above a 3% prediction, as do 2 of 2
    and 2 of 3, but one answer less flagged would not: no warning; 3 of 3 stays above with one less: the warning.
    Below: none of 100 flagged lies under 3% (its interval reaches 2.95%) but 1 of 100 would not; none of 200
    stays under with one more."""
    for count, total, warned in ((1, 1, False), (2, 2, False), (2, 3, False), (3, 3, True), (0, 100, False),
                                 (0, 200, True), (15, 500, False)):  # fmt: skip
        low, high = clopper_pearson(count, total)
        assert (low > 0.03 or high < 0.03) is ((count, total) != (15, 500))  # each but the last outside its interval
        assert outside(count, lambda k, n=total: clopper_pearson(k, n), 0.03) is warned, (count, total)
        assert drift([Hour("h", total, count, 0, 0, 0, 0)], 0.03, 24)["warning"] is warned
    assert outside(5, lambda k: clopper_pearson(k, 10), None) is False  # nothing predicted: nothing to warn of
    assert drift([], 0.03, 24)["warning"] is False
    # the reviews' warning moves one finding (a false alarm found defective leaves the good parts too): one answer,
    # flagged and found good (1 of 1 good parts), or 2 of 10 answers (interval from 3.7%): not yet; 3 of 10: warned
    for flagged, warned in ((1, False), (2, False), (3, True)):
        answers = 1 if flagged == 1 else 10
        said = reviewed([Hour("h", answers, flagged, flagged, flagged, 0, 0)], 0.03)
        assert said["interval"][0] > 0.03 and said["warning"] is warned, said


def _shifted(rng: np.random.Generator, answers: int, shift: float, defects: float) -> Hour:
    """One window of ``benchmarks/drift_warnings.py``'s simulated line (a 3% threshold; good parts' log scores moved
    by ``shift`` of their standard deviation, a lamp ageing; a defective part, probability ``defects``, flagged with
    recall 0.8 and, missed, passing above the good median), counted as the log's hour is."""
    flagged, above = simulated(rng, (answers,), shift, defects)
    return Hour("2026-12-03T06:00Z", answers, int(flagged.sum()), 0, 0, 0, 0, int(above.sum()))


def test_the_passed_parts_against_the_good_median_see_a_shift_of_the_whole_line_before_the_flagged_share_does():
    """1,000 windows of 500 answers, a 3% threshold. Calibrated, with 2% defects: the flagged share warns in 43% of
    the windows (the defects are flagged too, as its warning says), the passed parts' share above the good median in
    7.5%, within what a 90% interval promises. A shift of a fifth of a standard deviation and no defect: that share
    warns in 92.5% of the windows, the flagged share in 44.6% (it has moved from 3% to 4.6%, the body from 48.5% to
    56%)."""
    rng = np.random.default_rng(0)
    calm = [_shifted(rng, 500, 0.0, 0.02) for _ in range(1000)]
    assert np.mean([body([h], 0.03)["warning"] for h in calm]) <= 0.13
    assert np.mean([drift([h], 0.03, 24)["warning"] for h in calm]) >= 0.4
    moved = [_shifted(rng, 500, 0.2, 0.0) for _ in range(1000)]
    said = [body([h], 0.03) for h in moved]
    assert np.mean([s["warning"] for s in said]) >= 0.9
    assert np.mean([drift([h], 0.03, 24)["warning"] for h in moved]) <= 0.7
    assert np.mean([s["share"] for s in said]) == pytest.approx(0.559, abs=0.01)
    assert said[0]["expected_share"] == pytest.approx(0.47 / 0.97)
    assert body([Hour("h", 10, 10, 0, 0, 0, 0)], 0.03) is None  # nothing passed: nothing said
    assert body([h for h in moved[:1]], None) is None  # no predicted rate: nothing to compare with


def test_a_window_of_several_versions_is_judged_at_their_answer_weighted_rate_and_warns_no_more_than_it_promises():
    """Answers of several versions, each flagged on a calibrated line at its own version's predicted rate: the window
    is predicted at their answer-weighted mean (the active version's own while it is empty, none where a version that
    answered predicts none), and the flagged share's 90% interval, a binomial's at that mean, misses it in at most a
    tenth of such windows (the sum of draws at two rates varies less than the binomial at their mean)."""
    policies = {3: {"estimated_false_alarm_rate": 0.01}, 5: {"estimated_false_alarm_rate": 0.08}, 7: {}}
    rate = lambda p: p.get("estimated_false_alarm_rate")  # noqa: E731
    assert pooled_rate(policies, {3: 300, 5: 100}, 5, rate) == pytest.approx((300 * 0.01 + 100 * 0.08) / 400)
    assert pooled_rate(policies, {}, 5, rate) == 0.08 and pooled_rate(policies, {3: 0}, 3, rate) == 0.01
    assert pooled_rate(policies, {3: 10, 7: 1}, 3, rate) is None
    rng = np.random.default_rng(0)
    predicted = pooled_rate(policies, {3: 300, 5: 100}, 5, rate)
    warned = 0
    for _ in range(2000):
        flagged = int(rng.binomial(300, 0.01) + rng.binomial(100, 0.08))
        warned += drift([Hour("h", 400, flagged, 0, 0, 0, 0)], predicted, 24)["warning"]
    assert warned / 2000 <= 0.10, warned
