"""A new threshold for a fitted category: by value, by a target false-alarm rate, or by labelled images.

The ingest job's ``threshold`` command and ``PUT /categories/{name}/threshold`` both come here, so a threshold set
either way is described, evaluated and stored the same way: as a new version that shares the memory bank.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import psycopg

from patchcore import regions
from patchcore import threshold as thresholds
from patchcore.evaluation import part_figures
from store import evaluations, images, versions
from store.models import StoredModel


def _regions_at(model: StoredModel, scores: np.ndarray, threshold: float, cells: bytes) -> dict:
    """The defect regions of the stored evaluation's images (``scores``) judged at ``threshold`` from the fit's
    ``cells``, by this build's rule (:func:`patchcore.regions.localisation`)."""
    kept, grids, truths = regions.unpacked(cells)
    verdicts = [scores[i] > threshold for i in kept]
    return regions.localisation(grids, truths, verdicts, threshold, model.config.care)


def as_judged_now(model: StoredModel, cells: bytes | None) -> dict:
    """``model``'s stored evaluation with its defect regions judged again at its own threshold, from the fit's
    ``cells``: what a preview sets beside another threshold's, judged alike (an evaluation stored by an earlier build
    keeps the figures of that build's rule; without cells it stays as stored)."""
    evaluation = dict(model.evaluation)
    rows = evaluation.get("images") or []
    if cells is not None and rows and "regions" in evaluation:
        evaluation["regions"] = _regions_at(model, np.array([r["score"] for r in rows]), model.threshold, cells)
    return evaluation


def evaluation_at(
    model: StoredModel,
    threshold: float,
    target: float,
    labelled_are_test: bool,
    good: Sequence[float],
    cells: bytes | None = None,
    good_parts: Sequence[str | None] | None = None,
) -> dict:
    """The stored evaluation judged again at ``threshold`` from its per-image test scores (no image is read), with
    the false-alarm rate the ``good`` scores predict (per part too, by ``good_parts``); its defect regions too, from
    the fit's ``cells`` (:func:`store.evaluations.cells`; without them they stay as measured, at the threshold they
    name)."""
    evaluation = {k: v for k, v in model.evaluation.items() if k != "threshold_set_on_these_images"}
    rows = evaluation.get("images") or []
    if not rows:
        return evaluation
    scores = np.array([r["score"] for r in rows])
    labels = np.array([r["defect"] != "good" for r in rows])
    evaluation.update(thresholds.operating_point(scores, labels, threshold, target, good))
    evaluation["images"] = [{**r, "anomalous": bool(r["score"] > threshold)} for r in rows]
    evaluation["threshold"] = threshold
    if "parts" in evaluation:
        parts = [r.get("part") for r in rows]
        evaluation["parts"] = part_figures(scores, labels, parts, threshold, target, good, good_parts)
    if cells is not None and "regions" in evaluation:
        evaluation["regions"] = _regions_at(model, scores, threshold, cells)
    if labelled_are_test:
        evaluation["threshold_set_on_these_images"] = True
    return evaluation


def planned(
    connection: psycopg.Connection,
    model: StoredModel,
    value: float | None = None,
    false_alarm_rate: float | None = None,
    labelled: tuple[Sequence[float], Sequence[bool]] | None = None,
    labelled_are_test: bool = False,
    per: str = thresholds.PER_IMAGE,
    cells: bytes | None = None,
) -> versions.Change:
    """The version a threshold asked for (exactly one way) would make of ``model``, written nowhere: its threshold,
    policy and evaluation judged again, so that it can be looked at before it is set (:func:`set_threshold`).

    ``labelled`` holds image scores by this very model and whether each image is defective; ``labelled_are_test``
    says they are the stored evaluation's own test images (its figures are then marked optimistic); ``per`` says
    whose false-alarm rate ``false_alarm_rate`` is (:func:`patchcore.threshold.false_alarm_threshold`); ``cells``
    the fit's, where the caller has read them already (else read here). Raises ``ValueError`` for a request that
    cannot be met."""
    if sum(x is not None for x in (value, false_alarm_rate, labelled)) != 1:
        raise ValueError("give exactly one of a threshold value, a false-alarm rate or labelled images")
    if per != thresholds.PER_IMAGE and false_alarm_rate is None:
        raise ValueError("a threshold per part is set by a false-alarm rate, not by a value or labelled images")
    good, parts = images.good_scores(connection, model.bank_segments)
    target = false_alarm_rate if false_alarm_rate is not None else model.config.false_alarm_rate
    if value is not None:
        threshold, policy = thresholds.manual_threshold(value, good, parts, target)
    elif false_alarm_rate is not None:
        threshold, policy = thresholds.false_alarm_threshold(good, false_alarm_rate, parts, per)
    else:
        threshold, policy = thresholds.labelled_threshold(*labelled, good, parts, target)
    if cells is None:
        cells = evaluations.cells(connection, model.fit_id)
    evaluation = evaluation_at(model, threshold, target, labelled is not None and labelled_are_test, good, cells, parts)
    return versions.Change(threshold, policy, evaluation, target, model.memory_bank_size)


def set_threshold(
    connection: psycopg.Connection,
    model: StoredModel,
    actor: str,
    value: float | None = None,
    false_alarm_rate: float | None = None,
    labelled: tuple[Sequence[float], Sequence[bool]] | None = None,
    labelled_are_test: bool = False,
    per: str = thresholds.PER_IMAGE,
    cells: bytes | None = None,
) -> int:
    """Make the new version of ``model``'s category with the threshold asked for (:func:`planned`); returns its id.
    Raises ``ValueError`` for a request that cannot be met and ``store.versions.VersionConflict`` when the category
    got a newer version meanwhile."""
    change = planned(connection, model, value, false_alarm_rate, labelled, labelled_are_test, per, cells)
    detail = {"threshold": change.threshold, "previous_threshold": model.threshold, "policy": change.policy["kind"]}
    return versions.new_version(connection, model, change, actor, "threshold", detail)
