"""All SQL of the product: saving a fitted model, reading categories, and the served nearest-neighbour search.

Each fitted model owns its rows in ``images`` and its own partition of ``patches``, ``patches_model_<id>``, with
HNSW indexes on ``(embedding::vector(D))``, so every query of a category is served by that category's index and
scans only its rows, whatever the dimensions and sizes of the others. Model id and dimension are written into the
SQL as literals: the dimension is a type modifier, and a literal ``model_id`` lets the planner prune the other
partitions when it plans the statement.
"""

from __future__ import annotations

import json
import time
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
import torch
from psycopg import sql

from config import Settings
from patchcore.model import FittedModel, PatchCoreConfig

OPERATORS = {"cosine": "<=>", "l2": "<->"}
OPCLASSES = {"cosine": "vector_cosine_ops", "l2": "vector_l2_ops"}


@dataclass(frozen=True)
class StoredModel:
    """A category's active model as the database holds it."""

    id: int
    category_id: int
    category: str
    config: PatchCoreConfig
    weights: str | None
    weights_sha256: str | None
    threshold: float
    grid: tuple[int, int]
    memory_bank_size: int
    evaluation: dict
    timings: dict
    fitted_at: str
    bank_id: int
    threshold_policy: dict

    @property
    def dim(self) -> int:
        return self.config.embedding_dim


MAX_DIM = 2000


def check_dimension(dim: int) -> None:
    """Refuse what pgvector's HNSW index (and an inline heap row, migration 0002) cannot hold, before any work."""
    if not 1 <= dim <= MAX_DIM:
        raise ValueError(
            f"{dim}-dimensional patches cannot be stored: pgvector's HNSW index takes at most {MAX_DIM} dimensions; "
            "use fewer or shallower --layers (layer2,layer3 gives 384 to 1536)"
        )


def partition_name(model_id: int) -> str:
    """The table holding one model's memory bank, a partition of ``patches`` (migration 0003)."""
    return f"patches_model_{model_id}"


def index_name(model_id: int, metric: str) -> str:
    return f"{partition_name(model_id)}_{metric}_hnsw"


def index_metrics(metric: str) -> list[str]:
    """Cosine is always indexed (``<=>`` is what operators query by hand); the model's own metric too."""
    return ["cosine"] if metric == "cosine" else ["cosine", metric]


def _copy_rows(cursor: psycopg.Cursor, statement: str, types: list[str], rows: Any) -> int:
    count = 0
    with cursor.copy(statement) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)
            count += 1
    return count


def save_model(
    connection: psycopg.Connection,
    category: str,
    model: FittedModel,
    evaluation: dict,
    settings: Settings,
    actor: str = "ingest",
    plots: dict[str, bytes] | None = None,
) -> dict[str, float]:
    """Write ``model`` as the category's new active model, in ONE transaction.

    Readers see the previous model until the commit and the new one after it; an error or a kill before the
    commit leaves the previous model untouched. Returns load timings.
    """
    config = model.config
    dim = config.embedding_dim
    check_dimension(dim)
    timings: dict[str, float] = {}
    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute("INSERT INTO categories (name) VALUES (%s) ON CONFLICT (name) DO NOTHING", (category,))
        cursor.execute("SELECT id FROM categories WHERE name = %s FOR UPDATE", (category,))
        category_id = cursor.fetchone()[0]
        cursor.execute(
            """
            INSERT INTO models (category_id, backbone, layers, resize, crop, metric, coreset_ratio, num_neighbors,
                holdout_fraction, false_alarm_rate, seed, embedding_dim, grid_height, grid_width, weights,
                weights_sha256, threshold, memory_bank_size, evaluation, timings, threshold_policy, field_of_view,
                pixels, tile, tile_overlap)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            RETURNING id
            """,
            (
                category_id,
                config.backbone,
                list(config.layers),
                config.resize,
                config.crop,
                config.metric,
                config.coreset_ratio,
                config.num_neighbors,
                config.holdout_fraction,
                config.false_alarm_rate,
                config.seed,
                dim,
                model.grid[0],
                model.grid[1],
                model.weights,
                model.weights_sha256,
                model.threshold,
                int(model.memory_bank.shape[0]),
                json.dumps(evaluation),
                json.dumps(model.timings),
                json.dumps(model.threshold_policy),
                config.field_of_view,
                config.pixels,
                config.tile,
                config.tile_overlap,
            ),
        )
        model_id = cursor.fetchone()[0]
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence('images', 'id')) FROM generate_series(1, %s)", (len(model.images),)
        )
        image_ids = [row[0] for row in cursor.fetchall()]
        embeddings = model.image_embeddings.numpy().astype(np.float32)
        started = time.perf_counter()
        _copy_rows(
            cursor,
            "COPY images (id, model_id, split, label, file_name, sha256, width, height, calibration_score, embedding)"
            " FROM STDIN (FORMAT BINARY)",
            ["int8", "int8", "text", "text", "text", "text", "int4", "int4", "float8", "vector"],
            (
                (
                    image_ids[i],
                    model_id,
                    r.split,
                    "good",
                    r.file_name,
                    r.sha256,
                    r.width,
                    r.height,
                    r.score,
                    embeddings[i],
                )
                for i, r in enumerate(model.images)
            ),
        )
        _copy_rows(
            cursor,
            "COPY image_views (image_id, media_type, width, height, data) FROM STDIN (FORMAT BINARY)",
            ["int8", "text", "int4", "int4", "bytea"],
            (
                (image_ids[i], "image/jpeg", *r.view_size, r.view_jpeg)
                for i, r in enumerate(model.images)
                if r.view_jpeg is not None
            ),
        )
        for name, data in (plots or {}).items():
            cursor.execute(
                "INSERT INTO model_plots (model_id, name, media_type, data) VALUES (%s, %s, 'image/png', %s)",
                (model_id, name, data),
            )
        # The memory bank is loaded and indexed as a table of its own, and attached to ``patches`` only at the end:
        # attaching locks ``patches`` against other DDL but never against readers.
        partition = sql.Identifier(partition_name(model_id))
        cursor.execute(
            sql.SQL(
                "CREATE TABLE {} (LIKE patches INCLUDING DEFAULTS INCLUDING STORAGE INCLUDING INDEXES, "
                "CHECK (model_id = {}))"
            ).format(partition, sql.Literal(model_id))
        )
        bank = model.memory_bank.numpy().astype(np.float32)
        sources = model.bank_image.tolist()
        positions = model.bank_position.tolist()
        rows = _copy_rows(
            cursor,
            sql.SQL("COPY {} (model_id, image_id, grid_row, grid_col, embedding) FROM STDIN (FORMAT BINARY)")
            .format(partition)
            .as_string(cursor),
            ["int8", "int8", "int2", "int2", "vector"],
            ((model_id, image_ids[sources[i]], positions[i][0], positions[i][1], bank[i]) for i in range(len(bank))),
        )
        cursor.execute("ANALYZE images")
        cursor.execute(sql.SQL("ANALYZE {}").format(partition))
        timings["copy_seconds"] = time.perf_counter() - started
        timings["copy_rows_per_second"] = rows / max(timings["copy_seconds"], 1e-9)
        started = time.perf_counter()
        cursor.execute(
            sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(settings.maintenance_work_mem))
        )
        for metric in index_metrics(config.metric):
            cursor.execute(
                sql.SQL(
                    "CREATE INDEX {name} ON {partition} USING hnsw ((embedding::vector({dim})) {opclass}) "
                    "WITH (m = {m}, ef_construction = {ef})"
                ).format(
                    name=sql.Identifier(index_name(model_id, metric)),
                    partition=partition,
                    dim=sql.Literal(dim),
                    opclass=sql.SQL(OPCLASSES[metric]),
                    m=sql.Literal(settings.hnsw_m),
                    ef=sql.Literal(settings.hnsw_ef_construction),
                )
            )
        timings["index_seconds"] = time.perf_counter() - started
        cursor.execute(
            sql.SQL("ALTER TABLE patches ATTACH PARTITION {} FOR VALUES IN ({})").format(
                partition, sql.Literal(model_id)
            )
        )
        cursor.execute("UPDATE categories SET active_model_id = %s WHERE id = %s", (model_id, category_id))
        log_change(
            cursor, category_id, model_id, actor, "fit",
            {"memory_bank_size": int(model.memory_bank.shape[0]), "threshold": model.threshold,
             "threshold_policy": model.threshold_policy.get("kind")},
        )  # fmt: skip
    timings["model_id"] = model_id
    return timings


def log_change(cursor: psycopg.Cursor, category_id: int, model_id: int, actor: str, action: str, detail: dict) -> None:
    """One row of ``category_changes``: who made which version of a category, and how (it outlives the version)."""
    cursor.execute(
        "INSERT INTO category_changes (category_id, model_id, actor, action, detail) VALUES (%s, %s, %s, %s, %s)",
        (category_id, model_id, actor, action, json.dumps(detail)),
    )


def retire_old_models(connection: psycopg.Connection, category: str) -> int:
    """Drop the category's inactive versions, except the one whose memory bank the active version uses: detach each
    memory bank without blocking readers, drop it, delete the model row (its images go with it). Newest first, so a
    version made without a refit goes before the version that owns its bank.

    Runs after the new model is committed; a query that still holds the old model id finds no rows and retries
    with the new one (see :func:`search`). ``connection`` must be in autocommit mode. A retirement cut short is
    finished by the next one: every step accepts the state the previous run left.
    """
    model_ids = connection.execute(
        "SELECT m.id FROM models m JOIN categories c ON c.id = m.category_id "
        "LEFT JOIN models a ON a.id = c.active_model_id "
        "WHERE c.name = %s AND m.id IS DISTINCT FROM c.active_model_id "
        "AND m.id IS DISTINCT FROM coalesce(a.bank_model_id, a.id) ORDER BY m.id DESC",
        (category,),
    ).fetchall()
    for (model_id,) in model_ids:
        name = partition_name(model_id)
        partition = sql.Identifier(name)
        attached = connection.execute(
            "SELECT i.inhdetachpending FROM pg_inherits i WHERE i.inhparent = 'patches'::regclass "
            "AND i.inhrelid = to_regclass(%s)",
            (name,),
        ).fetchone()
        if attached is not None:
            mode = sql.SQL("FINALIZE" if attached[0] else "CONCURRENTLY")
            connection.execute(sql.SQL("ALTER TABLE patches DETACH PARTITION {} {}").format(partition, mode))
        connection.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(partition))
        connection.execute("DELETE FROM models WHERE id = %s", (model_id,))
    return len(model_ids)


_MODEL_COLUMNS = """
    m.id, c.id, c.name, m.backbone, m.layers, m.resize, m.crop, m.metric, m.coreset_ratio, m.num_neighbors,
    m.holdout_fraction, m.false_alarm_rate, m.seed, m.weights, m.weights_sha256, m.threshold, m.grid_height,
    m.grid_width, m.memory_bank_size, m.evaluation, m.timings, m.fitted_at::text, coalesce(m.bank_model_id, m.id),
    m.threshold_policy, m.field_of_view, m.pixels, m.tile, m.tile_overlap
"""


def _stored(row: tuple) -> StoredModel:
    model_id, category_id, name, backbone, layers, resize, crop, metric, ratio, b, holdout, rate, seed = row[:13]
    weights, weights_sha256, threshold, height, width, size, evaluation, timings, fitted_at = row[13:22]
    bank_id, policy, field_of_view, pixels, tile, tile_overlap = row[22:]
    config = PatchCoreConfig(
        backbone=backbone, layers=tuple(layers), field_of_view=field_of_view, resize=resize, crop=crop,
        pixels=pixels, tile=tile, tile_overlap=tile_overlap, metric=metric, coreset_ratio=ratio,
        num_neighbors=b, holdout_fraction=holdout, false_alarm_rate=rate, seed=seed,
    )  # fmt: skip
    return StoredModel(
        id=model_id, category_id=category_id, category=name, config=config, weights=weights,
        weights_sha256=weights_sha256, threshold=threshold, grid=(height, width), memory_bank_size=size,
        evaluation=evaluation, timings=timings, fitted_at=fitted_at, bank_id=bank_id, threshold_policy=policy,
    )  # fmt: skip


def active_model(connection: psycopg.Connection, category: str) -> StoredModel | None:
    row = connection.execute(
        f"SELECT {_MODEL_COLUMNS} FROM categories c JOIN models m ON m.id = c.active_model_id WHERE c.name = %s",
        (category,),
    ).fetchone()
    return _stored(row) if row else None


def active_models(connection: psycopg.Connection) -> list[StoredModel]:
    rows = connection.execute(
        f"SELECT {_MODEL_COLUMNS} FROM categories c JOIN models m ON m.id = c.active_model_id ORDER BY c.name"
    ).fetchall()
    return [_stored(row) for row in rows]


def image_counts(connection: psycopg.Connection, bank_id: int) -> dict[str, int]:
    """Good images per split of the model that owns a memory bank (``StoredModel.bank_id``)."""
    rows = connection.execute(
        "SELECT split, count(*) FROM images WHERE model_id = %s GROUP BY split", (bank_id,)
    ).fetchall()
    return {split: count for split, count in rows}


def patch_count(connection: psycopg.Connection, bank_id: int) -> int:
    return connection.execute("SELECT count(*) FROM patches WHERE model_id = %s", (bank_id,)).fetchone()[0]


@dataclass
class StoredBank:
    """A model's memory bank as stored, rows in ``id`` order, with where each row came from.

    A fitted model is never changed (a new fit is a new model), so a copy stays valid for the model's lifetime.
    """

    ids: np.ndarray
    embeddings: torch.Tensor
    image_ids: np.ndarray
    grid: np.ndarray
    file_names: dict[int, str]

    def rows(self, patch_ids: np.ndarray) -> np.ndarray:
        """Bank rows of stored patch ids."""
        rows = np.searchsorted(self.ids, patch_ids)
        if rows.size and (rows.max() >= self.ids.size or not np.array_equal(self.ids[rows], patch_ids)):
            raise LookupError("patch ids not in this memory bank")
        return rows


def load_memory_bank(connection: psycopg.Connection, model: StoredModel) -> StoredBank:
    """The model's memory bank, read in binary (text parsing took 2.5 s for bottle's 14,740 x 384, binary 0.2-0.6 s)."""
    with connection.cursor(binary=True) as cursor:
        rows = cursor.execute(
            sql.SQL(
                "SELECT id, image_id, grid_row, grid_col, embedding::vector({}) FROM patches WHERE model_id = {} "
                "ORDER BY id"
            ).format(sql.Literal(model.dim), sql.Literal(model.bank_id))
        ).fetchall()
        names = cursor.execute("SELECT id, file_name FROM images WHERE model_id = %s", (model.bank_id,)).fetchall()
    if not rows:
        raise LookupError(f"model {model.id} of {model.category} has no stored memory bank")
    return StoredBank(
        ids=np.array([r[0] for r in rows], dtype=np.int64),
        embeddings=torch.from_numpy(np.stack([r[4].to_numpy() for r in rows]).astype(np.float32)),
        image_ids=np.array([r[1] for r in rows], dtype=np.int64),
        grid=np.array([(r[2], r[3]) for r in rows], dtype=np.int64),
        file_names=dict(names),
    )


@dataclass
class SearchResult:
    """What one served search returns: every patch's HNSW nearest distance and patch id, similar good images."""

    distances: np.ndarray
    patch_ids: np.ndarray
    similar: list[dict]


_SEARCH = """
WITH q AS MATERIALIZED (
    SELECT ord, vec::vector({dim}) AS vec FROM unnest(%(queries)b::vector[]) WITH ORDINALITY AS t(vec, ord)
),
nn AS MATERIALIZED (
    SELECT q.ord, n.id, n.dist
    FROM q CROSS JOIN LATERAL (
        SELECT p.id, p.embedding::vector({dim}) {op} q.vec AS dist
        FROM patches p WHERE p.model_id = {bank_id}
        ORDER BY p.embedding::vector({dim}) {op} q.vec LIMIT 1
    ) n
),
lookalikes AS (
    SELECT i.id, i.file_name, i.split, 1 - (i.embedding::vector({dim}) <=> %(image)b::vector({dim})) AS similarity
    FROM images i WHERE i.model_id = {bank_id}
    ORDER BY i.embedding::vector({dim}) <=> %(image)b::vector({dim}) LIMIT %(top_k)s
)
SELECT
    (SELECT active_model_id = {model_id} FROM categories WHERE id = {category_id}),
    (SELECT array_agg(dist ORDER BY ord) FROM nn),
    (SELECT array_agg(id ORDER BY ord) FROM nn),
    (SELECT coalesce(json_agg(json_build_object('image_id', id, 'file_name', file_name, 'split', split,
                                                'similarity', similarity) ORDER BY similarity DESC), '[]')
     FROM lookalikes)
"""


def search_statement(model: StoredModel) -> sql.Composed:
    """The served search of a model, composed once per model and reused for every request: every patch's nearest
    memory-bank patch by HNSW (approximate: each distance is an upper bound of the exact one, which
    :mod:`patchcore.rerank` makes exact where it matters) and the most similar good images."""
    return sql.SQL(_SEARCH).format(
        dim=sql.Literal(model.dim),
        model_id=sql.Literal(model.id),
        bank_id=sql.Literal(model.bank_id),
        category_id=sql.Literal(model.category_id),
        op=sql.SQL(OPERATORS[model.config.metric]),
    )


SEARCH_WORK_MEM = "32MB"
_SESSION_EF_SEARCH: weakref.WeakKeyDictionary[psycopg.Connection, int] = weakref.WeakKeyDictionary()


def _configure_session(connection: psycopg.Connection, ef_search: int) -> None:
    """Set ``hnsw.ef_search`` for the session once, not per query, so a search stays one round trip.

    ``work_mem`` goes with it: the 784 query vectors of a 1536-dim category are 4.7 MB, more than PostgreSQL's
    default 4 MB, and would otherwise be written to a temporary file on every search. Iterative index scans stay
    off: each search reads one partition whole and asks for one row, so no filter can starve it (bottle, one
    connection, the 83 test images alternating: median 113.9 ms with ``strict_order``, 109.2 ms off)."""
    if _SESSION_EF_SEARCH.get(connection) != ef_search:
        connection.execute(
            "SELECT set_config('hnsw.ef_search', %s, false), set_config('hnsw.iterative_scan', 'off', false),"
            " set_config('work_mem', %s, false)",
            (str(ef_search), SEARCH_WORK_MEM),
        )
        _SESSION_EF_SEARCH[connection] = ef_search


def search(
    connection: psycopg.Connection,
    statement: sql.Composed,
    patches: np.ndarray,
    image_embedding: np.ndarray,
    top_k: int,
    ef_search: int,
) -> SearchResult | None:
    """HNSW nearest memory-bank patch of every query patch and the ``top_k`` most similar good images, in ONE round
    trip (on an autocommit connection). ``None`` means the model was replaced meanwhile: reload the category and ask
    again."""
    _configure_session(connection, ef_search)
    row = connection.execute(
        statement,
        {
            "queries": list(patches.astype(np.float32, copy=False)),
            "image": image_embedding.astype(np.float32, copy=False),
            "top_k": top_k,
        },
        prepare=True,
    ).fetchone()
    if row is None or not row[0] or row[1] is None:
        return None
    distances, patch_ids = np.asarray(row[1], dtype=np.float64), np.asarray(row[2], dtype=np.int64)
    if distances.shape != (len(patches),):
        raise LookupError(f"the HNSW search answered {distances.size} of {len(patches)} patches")
    return SearchResult(distances, patch_ids, row[3])
