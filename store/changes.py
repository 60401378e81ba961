"""The log of every change to a category: who made which version, how, and when (it outlives the versions)."""

from __future__ import annotations

import json

import psycopg


def log_change(cursor: psycopg.Cursor, category_id: int, model_id: int, actor: str, action: str, detail: dict) -> None:
    """One row of ``category_changes``, inside the transaction that makes the version."""
    cursor.execute(
        "INSERT INTO category_changes (category_id, model_id, actor, action, detail) VALUES (%s, %s, %s, %s, %s)",
        (category_id, model_id, actor, action, json.dumps(detail)),
    )


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
