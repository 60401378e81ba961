"""``python -m ingest threshold``: a category's threshold set by value, false-alarm rate or labelled images, or only
previewed (``--preview``): the same figures, nothing written."""

from __future__ import annotations

import argparse

from config import get_settings
from ingest.report import table
from ingest.stored import active_model
from patchcore import progress
from patchcore.datasets.copies import distinct
from patchcore.datasets.mvtec import mvtec_category
from patchcore.model import exact_prediction
from revisions.threshold import as_judged_now, planned, set_threshold
from serving.inspector import Inspector
from store import banks, evaluations, inspections, models
from store.database import connect, database_url
from store.migrate import upgrade

# what a threshold changes on the stored evaluation, the active version's column beside the new one's
CHANGED = (
    "threshold",
    "predicted_false_alarm_rate",
    "false_alarm_target",
    "f1",
    "precision",
    "recall",
    "false_alarms",
    "false_alarm_rate",
    "best_f1_within_target",
    "parts.f1",
    "parts.false_alarm_rate",
    "regions.defects_found",
    "regions.regions_on_defects",
    "regions.regions_on_good_parts",
    "regions.pixel_f1",
)


def _labelled_scores(connection, model: models.StoredModel, root, split: str) -> tuple[list[float], list[bool]]:
    """Image scores of the category's labelled test split by the stored model (exact search over its bank, which
    the served path equals: its re-rank makes s* and eq. 7 exact), less its copies, as a fit's evaluation reads it
    (:func:`patchcore.datasets.copies.distinct`: a test image with a training image's bytes is no part never seen)."""
    samples = distinct(mvtec_category(root, model.category, split)).test
    if not samples:
        raise ValueError(f"{root / model.category / 'test'} holds no labelled images")
    inspector = Inspector(model, banks.load_memory_bank(connection, model.bank_segments, model.dim), get_settings())
    bank = inspector.bank.embeddings
    scores = [
        exact_prediction(inspector.embed(inspector.embedder.preprocess.decode(s.path)), bank, model.config).score
        for s in progress.bar(samples, desc="labelled images", unit="img")
    ]
    return scores, [s.is_anomalous for s in samples]


def _on_the_line(counted: inspections.AtThresholds) -> str:
    """The line's answers of the last week at the threshold previewed, the active one's in brackets (and the parts
    they show, where queries named parts)."""
    said = f"on the log's last week ({counted.answered} answers by this memory bank"
    if counted.other_banks:  # images taught since emptied the window: say so
        said += f"; {counted.other_banks} by the fit's other memory banks left out, scored against other rows"
    said += "): "
    if not counted.answered:
        return said + "nothing to judge again yet"
    said += f"{counted.flagged} flagged (now {counted.flagged_now})"
    if counted.parts < counted.answered:  # queries named parts: each rejected where any of its views is flagged
        said += (
            f"; {counted.parts_flagged} of {counted.parts} parts flagged on any view (now {counted.parts_flagged_now})"
        )
    if counted.reviewed_good:
        said += f"; found good by a review, {counted.good_flagged} of {counted.reviewed_good} flagged (now "
        said += f"{counted.good_flagged_now})"
    if counted.reviewed_defective:
        said += f"; found defective, {counted.defects_passed} of {counted.reviewed_defective} passed (now "
        said += f"{counted.defects_passed_now})"
    return said


def run_threshold(args: argparse.Namespace) -> int:
    url = database_url(get_settings())
    upgrade(url)
    with connect(url, autocommit=True) as connection:
        model = active_model(connection, args.category)
        labelled = _labelled_scores(connection, model, args.labelled, args.real_iad_split) if args.labelled else None
        asked = {
            "value": args.value,
            "false_alarm_rate": args.false_alarm_rate,
            "labelled": labelled,
            "labelled_are_test": labelled is not None,
            "per": args.per,
            "cells": evaluations.cells(connection, model.fit_id),  # read once: the change and the table beside it
        }
        counted = None
        if args.preview:
            change = planned(connection, model, **asked)
            threshold, policy, evaluation = change.threshold, change.policy, change.evaluation
            said, column = "would be", "previewed"
            counted = inspections.at_thresholds(
                connection, args.category, model.bank_segments, inspections.PREVIEW_HOURS, threshold, model.threshold
            )
        else:
            version = set_threshold(connection, model, args.actor, **asked)
            models.retire_old_models(connection, args.category, get_settings().fits_kept)
            new = models.active_model(connection, args.category)
            threshold, policy, evaluation = new.threshold, new.threshold_policy, new.evaluation
            said, column = f"version {version} (was {model.id}),", f"version {version}"
        if evaluation.get("images"):  # the active version's regions judged as the new one's are
            before = as_judged_now(model, asked["cells"])
    print(
        f"{args.category}: {said} threshold {model.threshold:.4f} -> {threshold:.4f} ({policy['kind']}); estimated "
        f"false-alarm rate {policy['estimated_false_alarm_rate']:.2%}, {policy['good_scores_above']} of "
        f"{policy['good_scores']} good scores above it"
    )
    if part := policy.get("per_part"):
        print(
            f"   per part (each of {part['parts']} training parts by its worst view): estimated "
            f"{part['estimated_false_alarm_rate']:.2%} of good parts flagged on any view, {part['good_scores_above']} "
            f"of {part['parts']} above it"
        )
    if evaluation.get("images"):
        print(f"on the stored evaluation's {len(evaluation['images'])} test images:")
        print(table({f"version {model.id}": before, column: evaluation}, CHANGED))
        if evaluation.get("threshold_set_on_these_images"):
            print("   set on these very images: optimistic (a fit with --calibrate-on-test adds a cross-validated F1)")
    if counted is not None:
        print(_on_the_line(counted))
    if args.preview:
        print("nothing was written: without --preview this makes the new version")
    return 0
