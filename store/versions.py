"""New versions of a category made without a refit: one transaction that copies the active version's row with what
changes, and adds at most one segment of rows (added normals, defect examples) that only the new version reads.

Nothing the versions share is copied or re-indexed: the new version lists the segments of the one it came from
(:mod:`store.banks`), so a new threshold is one small row, and added normals cost only their own rows and index.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from store.banks import TABLES, partition_prefix, serialise_version_writers
from store.changes import log_change
from store.models import RETIRING, StoredModel

_COPIED = (
    "category_id, backbone, layers, resize, crop, metric, coreset_ratio, num_neighbors, holdout_fraction, "
    "seed, embedding_dim, grid_height, grid_width, weights, weights_sha256, timings, fitted_at, field_of_view, "
    "pixels, tile, tile_overlap, coverage_radius, white_level, jpeg_scaling, care_area"
)


class VersionConflict(Exception):
    """The category's active version changed while a new one was being made from it: read it again and retry."""


@dataclass
class Change:
    """What a new version changes. ``write(cursor, model_id)`` adds its rows inside the version's transaction and
    returns what to log; ``adds`` names the segment list that gets the new version's id (``bank`` or ``defects``)."""

    threshold: float
    policy: dict
    evaluation: dict
    false_alarm_rate: float
    memory_bank_size: int
    adds: str | None = None
    write: Callable[[psycopg.Cursor, int], dict] | None = None


def _lock_active(cursor: psycopg.Cursor, expected: StoredModel) -> None:
    """Lock the category's row for the transaction; :class:`VersionConflict` unless ``expected`` is its active
    version."""
    row = cursor.execute(
        "SELECT active_model_id FROM categories WHERE id = %s FOR UPDATE", (expected.category_id,)
    ).fetchone()
    if row is None or row[0] != expected.id:
        raise VersionConflict(f"category {expected.category} has a newer version than {expected.id}")


def new_version(
    connection: psycopg.Connection, based_on: StoredModel, change: Change, actor: str, action: str, detail: dict
) -> int:
    """Make the new active version of ``based_on``'s category in ONE transaction and log it. Readers see the old
    version or the new one, never a mix; an error or a kill before the commit leaves the old one serving. Raises
    :class:`VersionConflict` when ``based_on`` is no longer the active version (nothing is written)."""
    if change.adds not in (None, "bank", "defects"):
        raise ValueError(f"a version adds to the bank or the defects, not {change.adds!r}")
    with connection.transaction(), connection.cursor() as cursor:
        serialise_version_writers(cursor)
        _lock_active(cursor, based_on)
        model_id = cursor.execute("SELECT nextval(pg_get_serial_sequence('models', 'id'))").fetchone()[0]
        bank = list(based_on.bank_segments) + ([model_id] if change.adds == "bank" else [])
        defects = list(based_on.defect_segments) + ([model_id] if change.adds == "defects" else [])
        cursor.execute(
            f"INSERT INTO models (id, {_COPIED}, threshold, threshold_policy, evaluation, false_alarm_rate, "
            "memory_bank_size, bank_segments, defect_segments) "
            f"SELECT %s, {_COPIED}, %s, %s, %s, %s, %s, %s, %s FROM models WHERE id = %s",
            (
                model_id, change.threshold, json.dumps(change.policy), json.dumps(change.evaluation),
                change.false_alarm_rate, change.memory_bank_size, bank, defects, based_on.id,
            ),
        )  # fmt: skip
        written = change.write(cursor, model_id) if change.write else {}
        cursor.execute("UPDATE categories SET active_model_id = %s WHERE id = %s", (model_id, based_on.category_id))
        log_change(
            cursor, based_on.category_id, model_id, actor, action,
            {"previous_model_id": based_on.id, **detail, **written},
        )  # fmt: skip
    return model_id


class UnknownVersion(LookupError):
    """No stored version of the category has this id (a version of a retired fit went with it)."""


# a version can answer while every segment it reads is stored (a retirement drops a fit's versions newest first,
# so none is left reading a dropped segment)
_WHOLE = (
    "NOT EXISTS (SELECT 1 FROM unnest(m.bank_segments || m.defect_segments) s(id) "
    "WHERE NOT EXISTS (SELECT 1 FROM models o WHERE o.id = s.id))"
)


# what each version's evaluation says of its verdicts, listed beside it so that versions (a refit and the fit before
# it) are compared before one is made active again
JUDGED = ("image_auroc", "f1", "recall", "false_alarms", "good_images", "predicted_false_alarm_rate")


def stored_versions(connection: psycopg.Connection, category_id: int) -> list[dict]:
    """The stored versions of the category's kept fits (:func:`store.models.retire_old_models`), newest first: the
    fit each comes from, how it was made (its row of the change log), its threshold, memory bank and how its
    evaluation judged (:data:`JUDGED`, those it measured); every one can be made active again (:func:`reactivate`).
    A version of a retired fit that stays only because it owns known defects a kept fit reads is not one of them."""
    rows = connection.execute(
        f"""
        SELECT m.id, m.bank_segments[1], f.fitted_at::text, m.threshold, m.threshold_policy->>'kind',
               m.memory_bank_size, m.bank_segments, cardinality(m.defect_segments), ch.action, ch.actor,
               ch.changed_at::text, m.id = c.active_model_id,
               (SELECT coalesce(jsonb_object_agg(e.key, e.value), '{{}}') FROM jsonb_each(m.evaluation) e
                WHERE e.key = ANY(%s))
        FROM models m JOIN categories c ON c.id = m.category_id JOIN models f ON f.id = m.bank_segments[1]
        LEFT JOIN LATERAL (SELECT action, actor, changed_at FROM category_changes x
                           WHERE x.category_id = m.category_id AND x.model_id = m.id AND x.action <> 'reactivated'
                           ORDER BY x.id LIMIT 1) ch ON true
        WHERE m.category_id = %s AND c.active_model_id IS NOT NULL AND {_WHOLE}
        ORDER BY m.id DESC
        """,
        (list(JUDGED), category_id),
    ).fetchall()
    names = ("model_id", "fit", "fitted_at", "threshold", "threshold_policy", "memory_bank_size",
             "memory_bank_segments", "defect_segments", "made_by", "actor", "made_at", "active",
             "evaluation")  # fmt: skip
    return [dict(zip(names, row, strict=True)) for row in rows]


def reactivate(connection: psycopg.Connection, active: StoredModel, model_id: int, actor: str) -> bool:
    """Make the stored version ``model_id`` of ``active``'s category the active one again, as it was (its threshold,
    memory bank and known defects; a version of a kept earlier fit too, with that fit's network and settings), in
    one transaction, and log it; the versions made since stay stored, so the step can be undone the same way. False
    (nothing done) when it is the active version already. Raises :class:`UnknownVersion` when the category stores
    no such version and :class:`VersionConflict` when ``active`` is no longer the active version."""
    if model_id == active.id:
        return False
    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", RETIRING)  # not a version a retirement is dropping
        _lock_active(cursor, active)
        target = cursor.execute(
            f"SELECT 1 FROM models m WHERE m.id = %s AND m.category_id = %s AND {_WHOLE}",
            (model_id, active.category_id),
        ).fetchone()
        if target is None:
            raise UnknownVersion(
                f"{active.category} stores no version {model_id}: the versions of its kept fits can be made active "
                "again (INSPECT_FITS_KEPT); a retired fit's went with it"
            )
        cursor.execute("UPDATE categories SET active_model_id = %s WHERE id = %s", (model_id, active.category_id))
        log_change(cursor, active.category_id, model_id, actor, "reactivated", {"previous_model_id": active.id})
    return True


def kept_fits(connection: psycopg.Connection, category_id: int) -> list[dict]:
    """The category's kept fits, the one answering first, then newest first: when each was stored and what it keeps
    on disk, which ``INSPECT_FITS_KEPT`` multiplies: its versions' segments of patches with their HNSW indexes (the
    memory bank, added normals, known defects), and the image files kept for a refit (its job's images and the good
    images added since). Empty for a category with no active version."""
    rows = connection.execute(
        """
        SELECT f.id, f.fitted_at::text, f.id = a.bank_segments[1],
               (SELECT coalesce(sum(pg_total_relation_size(to_regclass(t.prefix || v.id))), 0)
                FROM models v CROSS JOIN unnest(%s::text[]) AS t(prefix)
                WHERE v.category_id = f.category_id AND v.bank_segments[1] = f.id),
               (SELECT coalesce(sum(length(i.data)), 0) FROM fit_jobs j JOIN fit_job_images i ON i.job_id = j.id
                WHERE j.model_id = f.id AND j.state = 'succeeded')
               + (SELECT coalesce(sum(length(o.data)), 0) FROM models v JOIN images i ON i.model_id = v.id
                  JOIN image_originals o ON o.image_id = i.id
                  WHERE v.category_id = f.category_id AND v.bank_segments[1] = f.id)
        FROM models f JOIN categories c ON c.id = f.category_id JOIN models a ON a.id = c.active_model_id
        WHERE f.category_id = %s AND f.id = f.bank_segments[1]
        ORDER BY f.id = a.bank_segments[1] DESC, f.id DESC
        """,
        ([partition_prefix(table) for table in TABLES], category_id),
    ).fetchall()
    names = ("fit", "fitted_at", "answering", "segment_bytes", "image_file_bytes")
    return [dict(zip(names, row, strict=True)) for row in rows]


def _setting(threshold: float, policy: dict) -> tuple:
    """How a version's threshold was set: at a target false-alarm rate (per image or per part), which added normals
    recalibrate to; else the value itself (set by hand or on labelled images), which they keep."""
    target = policy.get("target_false_alarm_rate")
    if policy.get("kind") == "false_alarm_rate" and target is not None:
        return "false_alarm_rate", policy.get("per", "image"), round(float(target), 9)
    return policy.get("kind"), threshold


def calibrated_alike(connection: psycopg.Connection, model: StoredModel) -> dict[int, dict]:
    """The versions of ``model``'s fit whose threshold was set as its own was (the same target false-alarm rate, or
    the same value), ``model`` among them, each with its threshold policy. On a calibrated line each of their answers
    is flagged at its own version's predicted rate, so a drift window counts them together: a good review that
    teaches the category, or a known defect, makes a version of the same setting, and a window that started again
    at each would be empty on a line whose reviews teach. A threshold set otherwise, or a refit, starts a new one."""
    rows = connection.execute(
        "SELECT id, threshold, threshold_policy FROM models WHERE category_id = %s AND bank_segments[1] = %s",
        (model.category_id, model.fit_id),
    ).fetchall()
    own = _setting(model.threshold, model.threshold_policy)
    alike = {version: policy for version, threshold, policy in rows if _setting(threshold, policy) == own}
    return {**alike, model.id: model.threshold_policy}
