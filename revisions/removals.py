"""Good images taken out of a fitted category without a refit: a new version that no longer counts them as good.

Why: a defect hidden among the good images is learned as good (its patches join the memory bank, so the same defect
on a new part finds a near neighbour) and raises the threshold for every part after it. The fit names the good
images that score highest as unseen parts (``highest_good_scores``); the one a person finds defective is removed
here in a second, where a refit takes minutes to hours.

What the new version is: the same segments (no row copied or deleted, no index rebuilt; the versions before still
read them whole) less the removed images (``models.removed_images``): their memory-bank rows are no longer searched
(:mod:`store.banks`, :meth:`serving.inspector.Inspector.search`), their good scores no longer count, and they are no
longer offered as look-alikes. The threshold is set again by the rule that set it where that rule rests on the good
scores (a target false-alarm rate), so a removed defect no longer raises it; a threshold set by value or on labelled
images is kept. The stored evaluation is judged again at that threshold from its per-image test scores, which were
measured with the removed rows in the bank and say so (``measured_before_removing_images``).

What it is not: a refit. The coreset keeps the rows it had less the removed ones, and what only those rows covered of
the other images' look is now covered by the next nearest rows, a little farther: removing rows never brings a
nearest row closer, so any part's score can only rise, and new good parts that look like a removed image may score
above what the kept good scores predict. A refit without the images chooses the coreset again; the two are measured
against each other in docs/teaching.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import psycopg

from patchcore import threshold as thresholds
from revisions.threshold import evaluation_at
from store import images, versions
from store.banks import StoredBank
from store.models import StoredModel


class UnknownImages(LookupError):
    """Images asked for that are not good images of the version (never were, or removed already)."""


@dataclass
class RemovedImages:
    """What a removal did: the new version, the images it no longer counts, the rows and threshold it changed."""

    category: str
    model_id: int
    previous_model_id: int
    removed: list[dict]
    patches_removed: int
    memory_bank_size: int
    good_scores: int
    threshold: float
    previous_threshold: float
    recalibrated: bool

    def as_dict(self) -> dict:
        return asdict(self)


def remove_images(
    connection: psycopg.Connection,
    model: StoredModel,
    bank: StoredBank,
    image_ids: Sequence[int],
    actor: str,
) -> RemovedImages:
    """Make the new version of ``model``'s category without the good images ``image_ids``, in ONE transaction (see
    the module's docstring). ``bank`` must be ``model``'s memory bank. Raises :class:`UnknownImages` naming the ids
    that are not good images of the version, ``ValueError`` when too little would be left (no memory-bank row, or
    too few good scores for the threshold's rule), ``VersionConflict`` when the category got a newer version
    meanwhile (nothing is written)."""
    wanted = sorted({int(i) for i in image_ids})
    if not wanted:
        raise ValueError("no image to remove")
    rows = images.good_images(connection, model.bank_segments, wanted, model.removed_images)
    unknown = sorted(set(wanted) - {r["image_id"] for r in rows})
    if unknown:
        raise UnknownImages(
            f"image(s) {', '.join(map(str, unknown))} are not good images of {model.category} (version {model.id}): "
            "see GET /categories/{name} for its images"
        )
    patches_removed = int(np.isin(bank.image_ids, wanted).sum())
    if patches_removed >= bank.ids.size:
        raise ValueError(f"removing {len(wanted)} image(s) would leave {model.category} no memory-bank row; refit it")
    good = images.good_scores(connection, model.bank_segments, (*model.removed_images, *wanted))
    policy_kind = model.threshold_policy.get("kind")
    recalibrated = policy_kind == "false_alarm_rate"
    target = float(model.threshold_policy.get("target_false_alarm_rate", model.config.false_alarm_rate))
    if recalibrated:
        threshold, policy = thresholds.false_alarm_threshold(good, target)
    else:
        threshold = model.threshold
        policy = {**model.threshold_policy, **thresholds.describe(threshold, good)}
    evaluation = evaluation_at(model, threshold, target, False, good)
    if model.evaluation.get("threshold_set_on_these_images"):
        evaluation["threshold_set_on_these_images"] = True
    evaluation["measured_before_removing_images"] = sorted(
        {*evaluation.get("measured_before_removing_images", []), *wanted}
    )
    size = model.memory_bank_size - patches_removed
    change = versions.Change(threshold, policy, evaluation, target, size, removes=tuple(wanted))
    detail = {
        "images": rows,
        "patches_removed": patches_removed,
        "threshold": threshold,
        "previous_threshold": model.threshold,
        "recalibrated": recalibrated,
    }
    model_id = versions.new_version(connection, model, change, actor, "remove_images", detail)
    return RemovedImages(
        model.category, model_id, model.id, rows, patches_removed, size, len(good), threshold, model.threshold,
        recalibrated,
    )  # fmt: skip


def image_ids_by_name(connection: psycopg.Connection, model: StoredModel, names: Sequence[str]) -> list[int]:
    """The ids of the good images named ``names`` (file names, as the fit and the category page show them).
    Raises :class:`UnknownImages` for a name no good image has, ``ValueError`` for one that several have (give
    their ids instead)."""
    found = images.ids_by_file_name(connection, model.bank_segments, names, model.removed_images)
    missing = [n for n in names if n not in found]
    if missing:
        raise UnknownImages(f"no good image of {model.category} is named {', '.join(missing)}")
    shared = {n: ids for n, ids in found.items() if len(ids) > 1}
    if shared:
        raise ValueError(
            "several good images share a name, give their ids: "
            + "; ".join(f"{n}: {', '.join(map(str, ids))}" for n, ids in shared.items())
        )
    return [found[n][0] for n in names]
