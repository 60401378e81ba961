"""The false-alarm rate as the reviews say (``serving.drift.reviewed``), on simulated windows of a line whose true
rates are known: its interval holds the true share of good parts flagged at least as often as it promises, and its
estimate is centred on it."""

from __future__ import annotations

import numpy as np
import pytest

from serving.drift import reviewed
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
