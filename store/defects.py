"""The library of known defects: labelled examples of a category's defects and the patches that show them.

An example keeps its file's facts, its view (JPEG, for people) and where its cells came from (a mask, or the most
anomalous patches by the model of the time); its patches are a segment of ``defect_patches`` (:mod:`store.banks`)
written by the version that added them, with each patch's grid cell.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg import sql

from config import Settings
from store.banks import ids, write_segment


@dataclass
class DefectExample:
    """One labelled defect image ready to store: its selected cells' features (N, D) and their (row, col)."""

    defect_type: str
    file_name: str
    sha256: str
    width: int
    height: int
    source: str | None
    cells_from: str
    view_jpeg: bytes
    view_size: tuple[int, int]
    features: np.ndarray
    cells: list[tuple[int, int]]


def write_examples(
    cursor: psycopg.Cursor,
    model_id: int,
    examples: Sequence[DefectExample],
    dim: int,
    metric: str,
    settings: Settings,
) -> dict:
    """Store ``examples`` as ``model_id``'s segment of the library, inside the caller's transaction."""
    example_ids = []
    for e in examples:
        row = cursor.execute(
            "INSERT INTO defect_examples (model_id, defect_type, file_name, sha256, width, height, source, cells_from,"
            " view_width, view_height, view_jpeg) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (model_id, e.defect_type, e.file_name, e.sha256, e.width, e.height, e.source, e.cells_from,
             *e.view_size, e.view_jpeg),
        ).fetchone()  # fmt: skip
        example_ids.append(row[0])
    rows = (
        (model_id, example_id, r, c, e.features[i].astype(np.float32))
        for example_id, e in zip(example_ids, examples, strict=True)
        for i, (r, c) in enumerate(e.cells)
    )
    timings = write_segment(
        cursor, "defect_patches", model_id, ("model_id", "example_id", "grid_row", "grid_col", "embedding"),
        ("int8", "int8", "int2", "int2", "vector"), rows, dim, metric, settings,
    )  # fmt: skip
    return {"defect_ids": example_ids, "defect_patches": timings["rows"], "index_seconds": timings["index_seconds"]}


def library(connection: psycopg.Connection, segments: Sequence[int]) -> list[dict]:
    """The examples of a version's library (its ``defect_segments``), newest first, with their patch counts."""
    if not segments:
        return []
    rows = connection.execute(
        sql.SQL(
            "SELECT e.id, e.defect_type, e.file_name, e.source, e.cells_from, e.added_at::text, e.model_id, "
            "(SELECT count(*) FROM defect_patches d WHERE d.model_id = e.model_id AND d.example_id = e.id) "
            "FROM defect_examples e WHERE e.model_id IN ({}) ORDER BY e.id DESC"
        ).format(ids(segments))
    ).fetchall()
    keys = ("id", "defect_type", "file_name", "source", "cells_from", "added_at", "model_id", "patches")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def known_defects(connection: psycopg.Connection, segments: Sequence[int], hashes: Sequence[str]) -> set[str]:
    """Which of ``hashes`` the library already holds (an example is not stored twice)."""
    if not segments:
        return set()
    rows = connection.execute(
        sql.SQL("SELECT DISTINCT sha256 FROM defect_examples WHERE model_id IN ({}) AND sha256 = ANY(%s)").format(
            ids(segments)
        ),
        (list(hashes),),
    ).fetchall()
    return {r[0] for r in rows}


def example_view(connection: psycopg.Connection, example_id: int) -> tuple[bytes, str] | None:
    """(JPEG of the view, file name) of one stored defect example."""
    row = connection.execute("SELECT view_jpeg, file_name FROM defect_examples WHERE id = %s", (example_id,)).fetchone()
    return (bytes(row[0]), row[1]) if row else None
