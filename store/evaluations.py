"""Each fit's evaluation cell by cell (migration 0018): its test images' patch distances and ground truth on the
patch grid, packed by :func:`patchcore.regions.packed`. Kept under the fit's own model id, as its plots are, and
read by every version of the fit when a new threshold judges the defect regions again."""

from __future__ import annotations

import psycopg


def write_cells(cursor: psycopg.Cursor, model_id: int, cells: bytes) -> None:
    cursor.execute("INSERT INTO evaluation_cells (model_id, cells) VALUES (%s, %s)", (model_id, cells))


def cells(connection: psycopg.Connection, fit_id: int) -> bytes | None:
    """The packed cells of the fit whose model id is ``fit_id`` (a version's first memory-bank segment); ``None``
    for a fit stored without them (no masks, or stored before migration 0018)."""
    row = connection.execute("SELECT cells FROM evaluation_cells WHERE model_id = %s", (fit_id,)).fetchone()
    return bytes(row[0]) if row else None
