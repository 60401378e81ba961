"""The good images of a memory bank: their rows (file, provenance, image embedding, good score) and their views."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import psycopg
from psycopg import sql

from patchcore.model import ImageRecord
from store.banks import copy_rows, ids


def write_images(
    cursor: psycopg.Cursor,
    model_id: int,
    records: Sequence[ImageRecord],
    embeddings: np.ndarray,
    sources: Sequence[str | None] | None = None,
) -> list[int]:
    """Store ``records`` (and their views) as ``model_id``'s good images inside the caller's transaction; returns
    their ids in order. ``sources`` say where images added after the fit came from (a path, who uploaded it)."""
    sources = list(sources) if sources is not None else [None] * len(records)
    cursor.execute(
        "SELECT nextval(pg_get_serial_sequence('images', 'id')) FROM generate_series(1, %s)", (len(records),)
    )
    image_ids = [row[0] for row in cursor.fetchall()]
    copy_rows(
        cursor,
        "COPY images (id, model_id, split, label, file_name, sha256, width, height, calibration_score, embedding,"
        " source, part, colour) FROM STDIN (FORMAT BINARY)",
        ["int8", "int8", "text", "text", "text", "text", "int4", "int4", "float8", "vector", "text", "text", "text"],
        (
            (i, model_id, r.split, "good", r.file_name, r.sha256, r.width, r.height, r.score, e, came, r.part, r.colour)
            for i, r, e, came in zip(image_ids, records, embeddings.astype(np.float32), sources, strict=True)
        ),
    )
    copy_rows(
        cursor,
        "COPY image_views (image_id, media_type, width, height, data) FROM STDIN (FORMAT BINARY)",
        ["int8", "text", "int4", "int4", "bytea"],
        (
            (image_id, "image/jpeg", *r.view_size, r.view_jpeg)
            for image_id, r in zip(image_ids, records, strict=True)
            if r.view_jpeg is not None
        ),
    )
    cursor.execute("ANALYZE images")
    return image_ids


def write_originals(cursor: psycopg.Cursor, image_ids: Sequence[int], files: Sequence[tuple[str, bytes]]) -> None:
    """The files of added good images as they were sent (``(file name, bytes)`` in the order of ``image_ids``), inside
    the caller's transaction, so that a refit takes them along (:func:`store.jobs.refit`)."""
    copy_rows(
        cursor,
        "COPY image_originals (image_id, file_name, data) FROM STDIN (FORMAT BINARY)",
        ["int8", "text", "bytea"],
        ((image_id, name, data) for image_id, (name, data) in zip(image_ids, files, strict=True)),
    )


def image_counts(connection: psycopg.Connection, segments: Sequence[int]) -> dict[str, int]:
    """Good images per split (``train``, ``holdout``, ``added``) of a memory bank's segments."""
    rows = connection.execute(
        sql.SQL("SELECT split, count(*) FROM images WHERE model_id IN ({}) GROUP BY split").format(ids(segments))
    ).fetchall()
    return {split: count for split, count in rows}


def highest_scored(connection: psycopg.Connection, segments: Sequence[int], limit: int) -> list[dict]:
    """The ``limit`` good images with the highest good scores, highest first: the tail that sets a threshold from good
    images, and where a defective image in the good set, or a rare good look, shows itself."""
    rows = connection.execute(
        sql.SQL(
            "SELECT id, file_name, split, calibration_score FROM images WHERE model_id IN ({})"
            " AND calibration_score IS NOT NULL ORDER BY calibration_score DESC, id LIMIT %s"
        ).format(ids(segments)),
        (limit,),
    ).fetchall()
    return [{"image_id": i, "file_name": name, "split": split, "score": score} for i, name, split, score in rows]


def known_images(connection: psycopg.Connection, segments: Sequence[int], hashes: Sequence[str]) -> dict[str, int]:
    """Which of ``hashes`` (sha256 of the files) the memory bank already holds: hash -> image id."""
    rows = connection.execute(
        sql.SQL(
            "SELECT sha256, min(id) FROM images WHERE model_id IN ({}) AND sha256 = ANY(%s) GROUP BY sha256"
        ).format(ids(segments)),
        (list(hashes),),
    ).fetchall()
    return dict(rows)


def good_scores(connection: psycopg.Connection, segments: Sequence[int]) -> tuple[list[float], list[str | None]]:
    """The good scores behind a threshold: each good image of the bank scored as unseen (cross-fitted), held out,
    or added later (scored against the bank without its own patches); beside them the part each image is a view of,
    where the set said (``None``: a part of its own), so that a threshold is described per part too."""
    rows = connection.execute(
        sql.SQL(
            "SELECT calibration_score, part FROM images WHERE model_id IN ({}) AND calibration_score IS NOT NULL"
            " ORDER BY id"
        ).format(ids(segments))
    ).fetchall()
    return [row[0] for row in rows], [row[1] for row in rows]


def hashes(
    connection: psycopg.Connection, segments: Sequence[int], image_ids: Sequence[int]
) -> dict[int, tuple[str, str]]:
    """Image id -> (sha256, file name) of those of ``image_ids`` that are good images of the memory bank."""
    rows = connection.execute(
        sql.SQL("SELECT id, sha256, file_name FROM images WHERE model_id IN ({}) AND id = ANY(%s)").format(
            ids(segments)
        ),
        (list(image_ids),),
    ).fetchall()
    return {i: (digest, name) for i, digest, name in rows}


def fitted_images(connection: psycopg.Connection, fit_id: int) -> list[tuple[str, str | None, str]]:
    """The good images a fit was made from (its training and held-out ones, not those added since): each file's
    sha256, its part (``None``: a part of its own) and its name."""
    return connection.execute(
        "SELECT sha256, part, file_name FROM images WHERE model_id = %s AND split IN ('train', 'holdout') ORDER BY id",
        (fit_id,),
    ).fetchall()
