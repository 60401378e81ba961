"""Is a line drifting? The share of parts a version flags, over a recent window, beside the false-alarm rate its
threshold predicts for good parts.

"Recent" is a window of hours (``INSPECT_DRIFT_HOURS``, 24 by default: a day of production, every shift) of the
active version's own answers only: another version has another threshold, so its answers say nothing of this one's
calibration, and a new version starts with an empty window. The observed share gets a 90% Clopper-Pearson interval
(exact for a binomial count, however few parts); the warning is raised when the predicted rate lies outside it.
The flagged share counts true defects too: on a line with a real defect rate, the share exceeds the false-alarm
rate by that much, so a warning says "more flagged than good parts would be", to be read beside the line's own
defect rate. Where the line names the part each picture shows, its parts are judged the same way: a part flagged
when any view is, against the share of good parts flagged on any view that the threshold's ``per_part`` predicts.
"""

from __future__ import annotations

from patchcore.threshold import clopper_pearson


def parts_drift(hours: list[tuple[str, int, int]], predicted: float | None) -> dict | None:
    """The same for parts the line named (``part`` on ``/query``), each flagged when any of its views is, beside the
    share of good parts its threshold predicts flagged on any view (the policy's ``per_part``; None for a category
    whose good images are one view each, where no such rate was estimated); None when no part was named."""
    if not hours:
        return None
    report = drift(hours, predicted, 0.0)
    return {
        "predicted_false_alarm_rate": predicted, "parts": report["inspections"], "flagged": report["flagged"],
        "flagged_share": report["flagged_share"], "interval": report["interval"], "warning": report["warning"],
        "hours": [{"hour": hour, "parts": n, "flagged": f, "flagged_share": f / n} for hour, n, f in hours],
    }  # fmt: skip


def drift(hours: list[tuple[str, int, int]], predicted: float | None, window_hours: float) -> dict:
    """The window's hours (``(hour, answered, flagged)``), its whole share with the interval, and the warning."""
    answered = sum(n for _, n, _ in hours)
    flagged = sum(f for _, _, f in hours)
    interval = list(clopper_pearson(flagged, answered)) if answered else None
    outside = bool(interval and predicted is not None and not interval[0] <= predicted <= interval[1])
    return {
        "window_hours": window_hours,
        "predicted_false_alarm_rate": predicted,
        "inspections": answered,
        "flagged": flagged,
        "flagged_share": flagged / answered if answered else None,
        "interval": interval,
        "warning": outside,
        "hours": [{"hour": hour, "inspections": n, "flagged": f, "flagged_share": f / n} for hour, n, f in hours],
    }
