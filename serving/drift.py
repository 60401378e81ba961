"""Is a line drifting? The share of parts a version flags, over a recent window, beside the false-alarm rate its
threshold predicts for good parts.

"Recent" is a window of hours (``INSPECT_DRIFT_HOURS``, 24 by default: a day of production, every shift) of the
answers of the active version and of the versions of its fit whose threshold was set the same way
(``store.versions.calibrated_alike``): the same target false-alarm rate, which added normals recalibrate to, or the
same value. On a calibrated line each answer is flagged at its own version's predicted rate, so the window's count
is a sum of such draws, predicted at their answer-weighted mean rate (:func:`pooled_rate`; the binomial at that mean
has at least the sum's variance, so the interval below is if anything conservative); a good review that teaches the
category makes a version, and a window that started again at each would be empty on a line whose reviews teach. A
threshold set otherwise (another rate, a value) or a refit starts a new window: its answers say nothing of the
calibration before it. The observed share gets a 90% Clopper-Pearson interval (exact for a binomial count, however
few parts); the warning is raised when the predicted rate lies outside it and one answer cannot change that
(:func:`outside`).
The flagged share counts true defects too: on a line with a real defect rate, the share exceeds the false-alarm
rate by that much, so a warning says "more flagged than good parts would be", to be read beside the line's own
defect rate. Where the line names the part each picture shows, its parts are judged the same way: a part flagged
when any view is, against the share of good parts flagged on any view that the threshold's ``per_part`` predicts.

The flagged share watches only the tail, where a threshold lies, so a shift of the whole line (a lamp ageing, a
camera moved) shows there late: a fifth of a standard deviation of the good log scores raises a 3% rate to about
4.6%. The passed answers see it sooner (:func:`body`): half of new good parts score above the median of the good
scores, so of the parts a threshold at predicted rate ``r`` passes, a share ``(0.5 - r) / (1 - r)`` does, and the
same shift moves that share from 48.5% to about 56% (``benchmarks/drift_warnings.py``: warned in 93% of simulated
windows of 500 answers, where the flagged share warned in 47%).

Reviews separate the two: once people review some of the window's answers, the share of good parts flagged (the
false-alarm rate itself, without the line's defects) is estimated from what they found, beside the same prediction
(:func:`reviewed`); for named parts too, a part reviewed when its views are (``store.inspections.hourly_parts``).
"""

from __future__ import annotations

from collections.abc import Callable

from patchcore.threshold import clopper_pearson
from store.inspections import REVIEW_COUNTS, Hour


def outside(count: int, interval: Callable[[int], tuple[float, float]], predicted: float | None) -> bool:
    """Does ``predicted`` lie outside ``interval(count)``, the interval of a share observed as ``count`` (of a total the
    callable knows), and still outside it with one answer's outcome moved toward the prediction (``count`` one less
    where the interval lies above it, one more where below)? A warning is a statement about the line, and one part
    is not the line: without this, one flagged answer in an empty window (1 of 1, whose 90% interval is 5%-100%)
    raised a warning the next pass cleared. Looked at after every answer over 2,000 answers, a 90% interval of a
    calibrated line's flagged share lay off its rate at some look in 52% of simulated lines, this rule in 30%
    (``benchmarks/drift_warnings.py``); the price is time, a shifted line seen some answers later (a median 96
    instead of 60 by the passed parts)."""
    if predicted is None:
        return False
    low, high = interval(count)
    if predicted < low:
        return interval(count - 1)[0] > predicted
    if predicted > high:
        return interval(count + 1)[1] < predicted
    return False


def pooled_rate(
    policies: dict[int, dict], answered: dict[int, int], active: int, rate: Callable[[dict], float | None]
) -> float | None:
    """The false-alarm rate a window of several versions' answers predicts: each version's ``rate`` (read from its
    threshold policy) weighed by its answers in the window (``answered``); the ``active`` version's own while the
    window is empty; None where a version answering in it predicts none."""
    weights = {version: count for version, count in answered.items() if count}  # the scans count pooled versions only
    if not weights:
        return rate(policies[active])
    rates = [(rate(policies[version]), count) for version, count in weights.items()]
    if any(r is None for r, _ in rates):
        return None
    return sum(r * count for r, count in rates) / sum(weights.values())


def parts_drift(hours: list[Hour], predicted: float | None) -> dict | None:
    """The same for parts the line named (``part`` on ``/query``), each flagged when any of its views is, beside the
    share of good parts its threshold predicts flagged on any view (the policy's ``per_part``; None for a category
    whose good images are one view each, where no such rate was estimated), and what their reviews say of it; None
    when no part was named."""
    if not hours:
        return None
    report = drift(hours, predicted, 0.0)
    return {
        "predicted_false_alarm_rate": predicted, "parts": report["inspections"], "flagged": report["flagged"],
        "flagged_share": report["flagged_share"], "interval": report["interval"], "warning": report["warning"],
        "hours": [{"hour": h.hour, "parts": h.answered, "flagged": h.flagged, "flagged_share": h.flagged / h.answered}
                  for h in hours],
        "reviews": reviewed(hours, predicted),
    }  # fmt: skip


def body(hours: list[Hour], predicted: float | None) -> dict | None:
    """Are the passed parts' scores where good parts' scores are? Of the window's passed answers, the share above the
    median of their version's good scores, beside the share a calibrated line gives: a new good part exceeds the median
    of the good scores it is exchangeable with with probability one half, whatever their distribution, and a
    threshold at predicted false-alarm rate ``r`` flags a share ``r`` of good parts, all of them above the median, so
    ``(0.5 - r) / (1 - r)`` of the good parts it passes lie above it (missed defects add a little). With a 90%
    Clopper-Pearson interval and a warning when the expected share lies outside it (:func:`outside`). None without
    a prediction (a version without good scores) or a passed answer."""
    passed = sum(h.answered - h.flagged for h in hours)
    if predicted is None or not passed or not 0 <= predicted < 0.5:
        return None
    above = sum(h.passed_above_median for h in hours)
    expected = (0.5 - predicted) / (1 - predicted)
    low, high = clopper_pearson(above, passed)
    return {
        "passed": passed, "above_good_median": above, "share": above / passed, "expected_share": expected,
        "interval": [low, high], "warning": outside(above, lambda k: clopper_pearson(k, passed), expected),
    }  # fmt: skip


def drift(hours: list[Hour], predicted: float | None, window_hours: float) -> dict:
    """The window's hours, its whole share with the interval, and the warning."""
    answered = sum(h.answered for h in hours)
    flagged = sum(h.flagged for h in hours)
    interval = list(clopper_pearson(flagged, answered)) if answered else None
    return {
        "window_hours": window_hours,
        "predicted_false_alarm_rate": predicted,
        "inspections": answered,
        "flagged": flagged,
        "flagged_share": flagged / answered if answered else None,
        "interval": interval,
        "warning": bool(answered) and outside(flagged, lambda k: clopper_pearson(k, answered), predicted),
        "hours": [
            {"hour": h.hour, "inspections": h.answered, "flagged": h.flagged, "flagged_share": h.flagged / h.answered}
            for h in hours
        ],
    }


def reviewed(hours: list[Hour], predicted: float | None) -> dict | None:
    """The share of good parts flagged, as the window's reviews say, beside the rate its threshold predicts; None
    when no answer (or named part) of the window is reviewed.

    The flagged answers a person reviewed are taken as a sample of the flagged ones, a share ``rho`` of them (people
    work through the log in order, not by how a part looks; reviews chosen by a part's look bias this, and nothing
    in the log can tell). Then the false alarms found are a binomial draw, at the false-alarm rate itself, from the
    good parts thinned to the same share: those false alarms and ``rho`` times the good passed answers. So the rate
    is their ratio, and its 90% interval Clopper-Pearson's over them: exact when every flagged answer is reviewed
    (false alarms among good parts, counted), close to it otherwise (``rho`` taken as known). The good passed answers
    are the passed ones less the share of defects the reviews of passes find, whose own Clopper-Pearson bounds are
    combined by Bonferroni (each at 95%); where no pass is reviewed every pass counts as good, which lowers the rate
    by the share of the good parts that are defects passed. The warning as the flagged share's (:func:`outside`), one
    review's finding moved. Answers flagged but none reviewed: no estimate."""
    answered, flagged, flagged_reviewed, found_good, passed_reviewed, found_defective = (
        sum(getattr(h, count) for h in hours) for count in REVIEW_COUNTS
    )
    if not flagged_reviewed + passed_reviewed:
        return None
    passed = answered - flagged
    estimate = interval = None
    warning = False
    if flagged_reviewed or not flagged:
        rho = flagged_reviewed / flagged if flagged else 1.0
        missed = found_defective / passed_reviewed if passed_reviewed else 0.0  # the share of passes defective
        low, high = clopper_pearson(found_defective, passed_reviewed, 0.95) if passed_reviewed else (0.0, 0.0)
        level = 0.95 if passed_reviewed else 0.9

        def good(found: int, e: float) -> float:  # good parts in the thinned sample: false alarms found, passes thinned
            return found + rho * passed * (1 - e)

        def bounds(found: int) -> tuple[float, float]:
            return (clopper_pearson(found, good(found, low), level)[0],
                    clopper_pearson(found, good(found, high), level)[1])  # fmt: skip

        estimate = found_good / good(found_good, missed) if good(found_good, missed) else 0.0
        interval = list(bounds(found_good))
        warning = outside(found_good, bounds, predicted)
    return {
        "flagged": flagged, "flagged_reviewed": flagged_reviewed, "flagged_found_good": found_good,
        "passed": passed, "passed_reviewed": passed_reviewed, "passed_found_defective": found_defective,
        "false_alarm_rate": estimate, "interval": interval,
        "warning": warning,
    }  # fmt: skip
