"""Versions of a category made without a refit, and the log of every change to a category.

A version made here copies the active model's row with what changes (a threshold, its policy, the evaluation at the
new threshold) and points at the memory bank of the model it came from, so nothing is copied or re-indexed: it is one
small transaction, and a server that notices the new version keeps its copy of the bank.
"""

from __future__ import annotations

import json

import psycopg

from store.repository import StoredModel, log_change

_COPIED = (
    "category_id, backbone, layers, resize, crop, metric, coreset_ratio, num_neighbors, holdout_fraction, "
    "seed, embedding_dim, grid_height, grid_width, weights, weights_sha256, memory_bank_size, "
    "timings, fitted_at, field_of_view, pixels, tile, tile_overlap"
)


class VersionConflict(Exception):
    """The category's active version changed while a new one was being made from it: read it again and retry."""


def good_scores(connection: psycopg.Connection, model: StoredModel) -> list[float]:
    """The good scores behind a threshold: each good image of the bank scored as unseen (out of fold) or held out."""
    rows = connection.execute(
        "SELECT calibration_score FROM images WHERE model_id = %s AND calibration_score IS NOT NULL ORDER BY id",
        (model.bank_id,),
    ).fetchall()
    return [row[0] for row in rows]


def new_version(
    connection: psycopg.Connection,
    based_on: StoredModel,
    threshold: float,
    policy: dict,
    evaluation: dict,
    false_alarm_rate: float,
    actor: str,
    action: str,
    detail: dict,
) -> int:
    """Make a new active version of ``based_on``'s category in ONE transaction, sharing its memory bank, and log
    it. Raises :class:`VersionConflict` when ``based_on`` is no longer the active version (nothing is written)."""
    with connection.transaction(), connection.cursor() as cursor:
        row = cursor.execute(
            "SELECT active_model_id FROM categories WHERE id = %s FOR UPDATE", (based_on.category_id,)
        ).fetchone()
        if row is None or row[0] != based_on.id:
            raise VersionConflict(f"category {based_on.category} has a newer version than {based_on.id}")
        model_id = cursor.execute(
            f"INSERT INTO models ({_COPIED}, threshold, threshold_policy, evaluation, false_alarm_rate, bank_model_id) "
            f"SELECT {_COPIED}, %s, %s, %s, %s, %s FROM models WHERE id = %s RETURNING id",
            (threshold, json.dumps(policy), json.dumps(evaluation), false_alarm_rate, based_on.bank_id, based_on.id),
        ).fetchone()[0]
        cursor.execute("UPDATE categories SET active_model_id = %s WHERE id = %s", (model_id, based_on.category_id))
        log_change(cursor, based_on.category_id, model_id, actor, action, {"previous_model_id": based_on.id, **detail})
    return model_id


def changes(connection: psycopg.Connection, category_id: int, limit: int = 50) -> list[dict]:
    """The category's changes, newest first."""
    rows = connection.execute(
        "SELECT id, model_id, changed_at::text, actor, action, detail FROM category_changes "
        "WHERE category_id = %s ORDER BY changed_at DESC, id DESC LIMIT %s",
        (category_id, limit),
    ).fetchall()
    return [
        {"id": r[0], "model_id": r[1], "changed_at": r[2], "actor": r[3], "action": r[4], "detail": r[5]} for r in rows
    ]
