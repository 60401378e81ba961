"""A category's drift report: the line's answers against its calibration."""

from __future__ import annotations

from pydantic import BaseModel, Field


class DriftHour(BaseModel):
    hour: str = Field(description="the hour's start, UTC")
    inspections: int
    flagged: int
    flagged_share: float


class DriftPartHour(BaseModel):
    hour: str = Field(description="the hour's start, UTC (of each part's last view)")
    parts: int
    flagged: int
    flagged_share: float


class DriftReviews(BaseModel):
    """What the window's reviews say of the false-alarm rate itself (see ``serving/drift.py``): the line's defects
    apart, the share of good parts flagged."""

    flagged: int = Field(description="answers flagged in the window")
    flagged_reviewed: int = Field(description="of them, reviewed")
    flagged_found_good: int = Field(description="of those, found good: false alarms")
    passed: int = Field(description="answers passed in the window")
    passed_reviewed: int = Field(description="of them, reviewed")
    passed_found_defective: int = Field(description="of those, found defective: defects the service missed")
    false_alarm_rate: float | None = Field(
        description="the share of good parts flagged, estimated from the reviews (each verdict's reviewed answers "
        "taken as a sample of its answers; passes as good where none is reviewed); null while no flagged answer is "
        "reviewed"
    )
    interval: list[float] | None = Field(description="its 90% interval; null with the estimate")
    warning: bool = Field(
        description="the predicted false-alarm rate is outside the interval, even with one answer moved toward it"
    )


class DriftParts(BaseModel):
    """The parts the line named in the window, each flagged when any of its views was."""

    predicted_false_alarm_rate: float | None = Field(
        description="the share of good parts flagged on any view the threshold predicts (its per_part); null where "
        "the good images are one view each"
    )
    parts: int = Field(description="parts named by these versions' answers in the window")
    flagged: int = Field(description="of them, flagged on any view")
    flagged_share: float
    interval: list[float] = Field(description="90% Clopper-Pearson interval of the flagged share")
    warning: bool = Field(
        description="the predicted rate is outside the interval, even with one answer moved toward it"
    )
    hours: list[DriftPartHour]
    reviews: DriftReviews | None = Field(
        default=None,
        description="what the window's reviews say of the share of good parts flagged on any view, counted in parts "
        "(a flagged part reviewed when every flagged view is, found good when no view is found defective; a passed "
        "part reviewed when every view is); null until a named part is reviewed",
    )


class DriftBody(BaseModel):
    """Where the passed parts' scores lie against the good parts' (see ``serving/drift.py``): a shift of the whole
    line shows here before the flagged share moves."""

    passed: int = Field(description="passed answers of the window")
    above_good_median: int = Field(description="of them, scoring above the median of their version's good scores")
    share: float
    expected_share: float = Field(
        description="the share a calibrated line gives: (0.5 - r) / (1 - r), r the predicted false-alarm rate"
    )
    interval: list[float] = Field(description="90% Clopper-Pearson interval of the share")
    warning: bool = Field(
        description="the expected share is outside the interval, even with one answer moved toward it: the passed "
        "parts score unlike good"
    )


class DriftReport(BaseModel):
    """The recent answers of the active version and of the versions of its fit whose threshold was set the same way,
    against their calibration (see ``serving/drift.py``)."""

    category: str
    model_id: int
    threshold: float
    versions: list[int] = Field(
        description="the versions whose answers the window counts: the active one and those of its fit whose "
        "threshold was set the same way (the same target false-alarm rate, which added normals recalibrate to, or the "
        "same value); a good review that teaches makes one, another threshold or a refit starts a new window"
    )
    window_hours: float = Field(description="the recent window, INSPECT_DRIFT_HOURS")
    predicted_false_alarm_rate: float | None = Field(
        description="the share of good parts the threshold is expected to flag, from the version's good scores (over "
        "several versions, each one's weighed by its answers in the window)"
    )
    inspections: int = Field(description="answers of these versions in the window")
    flagged: int
    flagged_share: float | None
    interval: list[float] | None = Field(description="90% Clopper-Pearson interval of the flagged share")
    warning: bool = Field(
        description="the predicted false-alarm rate is outside the interval, even with one answer moved toward it: "
        "more (or fewer) parts flagged than good parts would be; read it beside the line's own defect rate"
    )
    hours: list[DriftHour]
    parts: DriftParts | None = Field(
        default=None, description="the same per part, where the line names parts (part on /query); null where none"
    )
    reviews: DriftReviews | None = Field(
        default=None, description="the false-alarm rate as the window's reviews say; null while none is reviewed"
    )
    body: DriftBody | None = Field(
        default=None,
        description="where the passed answers' scores lie against the good scores' median, beside a calibrated "
        "line's share (the whole line's shift, before the flagged share shows it); null without a predicted rate or a "
        "passed answer",
    )
    scores: list[float] = Field(description="recent answers' scores, newest first (at most 5,000)")
    good_scores: list[float] = Field(description="the good scores the threshold was set from")
