"""Memory banks and defect libraries as rows: segments (partitions) written, indexed, read and dropped.

A segment is the rows one version added to a partitioned table (``patches`` or ``defect_patches``): a fit's whole
coreset, a batch of added normals, a batch of defect examples. It lives in its own partition,
``<table>_model_<id>``, with HNSW indexes on ``(embedding::vector(D))``; a version reads the union of its segments
(``models.bank_segments``, ``models.defect_segments``), so a new version copies no row and re-indexes nothing it
shares with the one before. Model ids and dimension are written into the SQL as literals: the dimension is a type
modifier, and literal ids let the planner prune every other partition.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
import torch
from psycopg import sql

from config import Settings

OPERATORS = {"cosine": "<=>", "l2": "<->"}
OPCLASSES = {"cosine": "vector_cosine_ops", "l2": "vector_l2_ops"}
TABLES = ("patches", "defect_patches")


def partition_prefix(table: str = "patches") -> str:
    """What a segment's partition is named before its id: SQL names one from a version's id as ``prefix || id``."""
    return f"{table}_model_"


def partition_name(model_id: int, table: str = "patches") -> str:
    """The table holding one segment, a partition of ``table`` (migrations 0003 and 0008)."""
    return f"{partition_prefix(table)}{model_id}"


def index_name(model_id: int, metric: str, table: str = "patches") -> str:
    return f"{partition_name(model_id, table)}_{metric}_hnsw"


def index_metrics(metric: str) -> list[str]:
    """Cosine is always indexed (``<=>`` is what operators query by hand); the model's own metric too."""
    return ["cosine"] if metric == "cosine" else ["cosine", metric]


def ids(segments: Sequence[int]) -> sql.Composed:
    """``a, b, c``: segment ids as literals for ``model_id IN (...)``."""
    return sql.SQL(", ").join(sql.Literal(int(s)) for s in segments)


def copy_rows(cursor: psycopg.Cursor, statement: str | sql.Composable, types: list[str], rows: Iterable[Any]) -> int:
    count = 0
    with cursor.copy(statement) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)
            count += 1
    return count


VERSION_WRITERS = (7412, 0)  # the advisory lock every transaction that makes a version takes first (jobs use 7411)


def serialise_version_writers(cursor: psycopg.Cursor) -> None:
    """Wait, inside the caller's transaction, until no other transaction that makes a version (a fit stored, a
    threshold, added normals or defects) is open; taken first, before any row or table lock. Attaching a segment
    (:func:`write_segment`) needs a SHARE ROW EXCLUSIVE lock on ``models`` and ``images``, which its foreign keys
    reference and which the same transaction has already written (ROW EXCLUSIVE); two such transactions, each
    holding the weaker lock and waiting for the stronger, deadlock, and PostgreSQL aborts one (a mixed soak
    caught it: added normals refused with 503 while a worker stored a new product; the worker's job could as well
    have failed after its whole fit). One lock taken first by all of them orders them, so none waits while holding
    what another needs."""
    cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", VERSION_WRITERS)


def write_segment(
    cursor: psycopg.Cursor,
    table: str,
    model_id: int,
    columns: Sequence[str],
    types: Sequence[str],
    rows: Iterable[Any],
    dim: int,
    metric: str,
    settings: Settings,
) -> dict[str, float]:
    """Load ``rows`` as ``model_id``'s segment of ``table``, index it and attach it, inside the caller's transaction.

    The segment is loaded and indexed as a table of its own and attached only at the end: attaching locks the
    parent against other DDL but never against readers. Returns timings and the row count."""
    if table not in TABLES:
        raise ValueError(f"no segments in table {table!r}")
    started = time.perf_counter()
    partition = sql.Identifier(partition_name(model_id, table))
    cursor.execute(
        sql.SQL(
            "CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING STORAGE INCLUDING INDEXES, CHECK (model_id = {}))"
        ).format(partition, sql.SQL(table), sql.Literal(model_id))
    )
    count = copy_rows(
        cursor,
        sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            partition, sql.SQL(", ").join(map(sql.Identifier, columns))
        ),
        list(types),
        rows,
    )
    cursor.execute(sql.SQL("ANALYZE {}").format(partition))
    copied = time.perf_counter()
    cursor.execute(sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(settings.maintenance_work_mem)))
    for each in index_metrics(metric):
        cursor.execute(
            sql.SQL(
                "CREATE INDEX {name} ON {partition} USING hnsw ((embedding::vector({dim})) {opclass}) "
                "WITH (m = {m}, ef_construction = {ef})"
            ).format(
                name=sql.Identifier(index_name(model_id, each, table)),
                partition=partition,
                dim=sql.Literal(dim),
                opclass=sql.SQL(OPCLASSES[each]),
                m=sql.Literal(settings.hnsw_m),
                ef=sql.Literal(settings.hnsw_ef_construction),
            )
        )
    indexed = time.perf_counter()
    cursor.execute(
        sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
            sql.SQL(table), partition, sql.Literal(model_id)
        )
    )
    return {
        "rows": count,
        "copy_seconds": copied - started,
        "copy_rows_per_second": count / max(copied - started, 1e-9),
        "index_seconds": indexed - copied,
    }


def drop_segments(connection: psycopg.Connection, model_id: int) -> None:
    """Detach (without blocking readers) and drop ``model_id``'s segments; autocommit. A drop cut short is finished
    by the next call: every step accepts the state the previous one left."""
    for table in TABLES:
        name = partition_name(model_id, table)
        partition = sql.Identifier(name)
        attached = connection.execute(
            "SELECT i.inhdetachpending FROM pg_inherits i WHERE i.inhparent = to_regclass(%s) "
            "AND i.inhrelid = to_regclass(%s)",
            (table, name),
        ).fetchone()
        if attached is not None:
            mode = sql.SQL("FINALIZE" if attached[0] else "CONCURRENTLY")
            connection.execute(
                sql.SQL("ALTER TABLE {} DETACH PARTITION {} {}").format(sql.Identifier(table), partition, mode)
            )
        connection.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(partition))


def patch_count(connection: psycopg.Connection, segments: Sequence[int]) -> int:
    return connection.execute(
        sql.SQL("SELECT count(*) FROM patches WHERE model_id IN ({})").format(ids(segments))
    ).fetchone()[0]


@dataclass
class StoredBank:
    """A version's memory bank as stored, rows in ``id`` order, with where each row came from.

    Segments never change (a new version adds a segment), so a copy stays valid for the version's lifetime, and a
    server extends its copy with the segments a newer version added instead of reading it all again."""

    segments: tuple[int, ...]
    ids: np.ndarray
    embeddings: torch.Tensor
    image_ids: np.ndarray
    grid: np.ndarray
    file_names: dict[int, str]
    owners: np.ndarray  # the segment (model id) of each row
    calibration: dict[int, tuple[int, float]]  # good image id -> (its segment, its score as an unseen part)
    sizes: dict[int, set[tuple[int, int]]]  # segment -> the (width, height) sizes of its good images
    colours: dict[int, set[str | None]]  # segment -> its good images' colourings (None: not known)

    def good_scores(self) -> list[float]:
        """The good scores behind the version's threshold (``store.images.good_scores``, in the same order), kept with
        the copy so that a served answer can say how rare its score is among good parts without a query."""
        return [score for _, (segment, score) in sorted(self.calibration.items()) if segment in self.segments]

    def good_sizes(self) -> set[tuple[int, int]]:
        """The (width, height) sizes of the version's good images: the scales its model has seen parts at."""
        return set().union(*(self.sizes.get(segment, set()) for segment in self.segments))

    def good_colours(self) -> set[str | None]:
        """The colourings of the version's good images (:func:`patchcore.views.colouring`; None: not known for
        some): the kinds of picture its model has seen parts in."""
        return set().union(*(self.colours.get(segment, set()) for segment in self.segments))

    def rows(self, patch_ids: np.ndarray) -> np.ndarray:
        """Bank rows of stored patch ids."""
        rows = np.searchsorted(self.ids, patch_ids)
        if rows.size and (rows.max() >= self.ids.size or not np.array_equal(self.ids[rows], patch_ids)):
            raise LookupError("patch ids not in this memory bank")
        return rows

    def first(self, segments: tuple[int, ...]) -> StoredBank:
        """This bank's rows of its first ``segments`` only (an earlier version made active again): they are its
        first rows, ids growing with the segments."""
        count = int(np.isin(self.owners, segments).sum())
        return StoredBank(
            segments=segments,
            ids=self.ids[:count],
            embeddings=self.embeddings[:count],
            image_ids=self.image_ids[:count],
            grid=self.grid[:count],
            file_names=self.file_names,  # names of images by id: those of later segments are never asked
            owners=self.owners[:count],
            calibration=self.calibration,  # read only through good_scores(), which keeps this bank's segments
            sizes=self.sizes,  # read only through good_sizes(), which keeps this bank's segments too
            colours=self.colours,  # and through good_colours()
        )

    def extended(self, more: StoredBank) -> StoredBank:
        """This bank and ``more`` (later segments: larger ids) as one."""
        return StoredBank(
            segments=self.segments + more.segments,
            ids=np.concatenate([self.ids, more.ids]),
            embeddings=torch.cat([self.embeddings, more.embeddings]),
            image_ids=np.concatenate([self.image_ids, more.image_ids]),
            grid=np.concatenate([self.grid, more.grid]),
            file_names={**self.file_names, **more.file_names},
            owners=np.concatenate([self.owners, more.owners]),
            calibration={**self.calibration, **more.calibration},
            sizes={**self.sizes, **more.sizes},
            colours={**self.colours, **more.colours},
        )


def load_memory_bank(
    connection: psycopg.Connection, segments: Sequence[int], dim: int, reuse: StoredBank | None = None
) -> StoredBank:
    """The memory bank made of ``segments``: ``reuse`` when it holds exactly them, ``reuse`` extended when its
    segments begin them (normals were added), its first rows when they begin its segments (an earlier version made
    active again), else read whole. Raises ``LookupError`` when no row is stored (the version was retired
    meanwhile)."""
    segments = tuple(int(s) for s in segments)
    if reuse is not None and reuse.segments == segments:
        return reuse
    if reuse is not None and reuse.segments[: len(segments)] == segments:
        return reuse.first(segments)
    if reuse is not None and segments[: len(reuse.segments)] == reuse.segments:
        return reuse.extended(_read_segments(connection, segments[len(reuse.segments) :], dim))
    bank = _read_segments(connection, segments, dim)
    if bank.ids.size == 0:
        raise LookupError(f"no stored memory bank in segments {list(segments)}")
    return bank


def _read_segments(connection: psycopg.Connection, segments: Sequence[int], dim: int) -> StoredBank:
    """The memory-bank rows of ``segments``, read in binary (text parsing took 2.5 s for bottle's 14,740 x 384,
    binary 0.2-0.6 s)."""
    with connection.cursor(binary=True) as cursor:
        rows = cursor.execute(
            sql.SQL(
                "SELECT id, image_id, grid_row, grid_col, embedding::vector({}), model_id FROM patches "
                "WHERE model_id IN ({}) ORDER BY id"
            ).format(sql.Literal(dim), ids(segments))
        ).fetchall()
        images = cursor.execute(
            sql.SQL(
                "SELECT id, file_name, model_id, calibration_score, width, height, colour FROM images "
                "WHERE model_id IN ({})"
            ).format(ids(segments))
        ).fetchall()
    sizes: dict[int, set[tuple[int, int]]] = {}
    colours: dict[int, set[str | None]] = {}
    for image in images:
        sizes.setdefault(image[2], set()).add((image[4], image[5]))
        colours.setdefault(image[2], set()).add(image[6])
    return StoredBank(
        segments=tuple(segments),
        ids=np.array([r[0] for r in rows], dtype=np.int64),
        embeddings=torch.from_numpy(np.stack([r[4].to_numpy() for r in rows]).astype(np.float32))
        if rows
        else torch.empty(0, dim),
        image_ids=np.array([r[1] for r in rows], dtype=np.int64),
        grid=np.array([(r[2], r[3]) for r in rows], dtype=np.int64).reshape(-1, 2),
        file_names={r[0]: r[1] for r in images},
        owners=np.array([r[5] for r in rows], dtype=np.int64),
        calibration={r[0]: (r[2], r[3]) for r in images if r[3] is not None},
        sizes=sizes,
        colours=colours,
    )
