"""The served searches: every patch's nearest memory-bank patch and the look-alike good images in one round trip,
and, for an anomalous image, its worst patches' nearest known defects in one more.

A version's rows are the union of its segments (:mod:`store.banks`); PostgreSQL reads them through one Merge Append
of the segments' HNSW index scans, each ordered by distance, so ``LIMIT 1`` stays an index search.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg import sql

from patchcore.defects import Neighbour
from store.banks import OPERATORS, ids
from store.models import StoredModel


@dataclass
class SearchResult:
    """What one served search returns: every patch's HNSW nearest distance and patch id, similar good images."""

    distances: np.ndarray
    patch_ids: np.ndarray
    similar: list[dict]


_LOOKALIKES = """
(
    SELECT i.id, i.file_name, i.split, 1 - (i.embedding::vector({dim}) <=> %(image)b::vector({dim})) AS similarity
    FROM images i WHERE i.model_id IN ({segments})
    ORDER BY i.embedding::vector({dim}) <=> %(image)b::vector({dim}) LIMIT %(top_k)s
)"""
_CURRENT = "(SELECT active_model_id = {model_id} FROM categories WHERE id = {category_id})"
_SIMILAR = """(SELECT coalesce(json_agg(json_build_object('image_id', id, 'file_name', file_name, 'split', split,
                                                'similarity', similarity) ORDER BY similarity DESC), '[]')
     FROM lookalikes)"""

_SEARCH = (
    """
WITH q AS MATERIALIZED (
    SELECT ord, vec::vector({dim}) AS vec FROM unnest(%(queries)b::vector[]) WITH ORDINALITY AS t(vec, ord)
),
nn AS MATERIALIZED (
    SELECT q.ord, n.id, n.dist
    FROM q CROSS JOIN LATERAL (
        SELECT p.id, p.embedding::vector({dim}) {op} q.vec AS dist
        FROM patches p WHERE p.model_id IN ({searched})
        ORDER BY p.embedding::vector({dim}) {op} q.vec LIMIT 1
    ) n
),
lookalikes AS """
    + _LOOKALIKES
    + """
SELECT """
    + _CURRENT
    + """,
    (SELECT array_agg(dist ORDER BY ord) FROM nn), (SELECT array_agg(id ORDER BY ord) FROM nn),
    """
    + _SIMILAR
    + "\n"
)

_LOOKALIKES_ONLY = "WITH lookalikes AS " + _LOOKALIKES + "SELECT " + _CURRENT + ", " + _SIMILAR + "\n"


def search_statement(model: StoredModel, searched: Sequence[int] | None = None) -> sql.Composed:
    """The served search of a model, composed once per model and reused for every request: every patch's nearest
    memory-bank patch by HNSW (approximate: each distance is an upper bound of the exact one, which
    :mod:`patchcore.rerank` makes exact where it matters) among the patches of the ``searched`` segments (default:
    all of the version's), and the most similar good images of all its segments."""
    return sql.SQL(_SEARCH).format(
        dim=sql.Literal(model.dim),
        model_id=sql.Literal(model.id),
        searched=ids(model.bank_segments if searched is None else searched),
        segments=ids(model.bank_segments),
        category_id=sql.Literal(model.category_id),
        op=sql.SQL(OPERATORS[model.config.metric]),
    )


def lookalikes_statement(model: StoredModel) -> sql.Composed:
    """What the database still answers when the patches are searched in the API process: whether ``model`` is still
    its category's active version, and the most similar good images of all its segments (an exact scan of a few
    hundred image rows: ``images`` has no vector index, so ``hnsw.ef_search`` does not limit ``top_k``)."""
    return sql.SQL(_LOOKALIKES_ONLY).format(
        dim=sql.Literal(model.dim),
        model_id=sql.Literal(model.id),
        segments=ids(model.bank_segments),
        category_id=sql.Literal(model.category_id),
    )


def lookalikes(
    connection: psycopg.Connection, statement: sql.Composed, image_embedding: np.ndarray, top_k: int, ef_search: int
) -> list[dict] | None:
    """The ``top_k`` most similar good images in one round trip; ``None`` means the model was replaced meanwhile."""
    _configure_session(connection, ef_search)
    row = connection.execute(
        statement, {"image": image_embedding.astype(np.float32, copy=False), "top_k": top_k}, prepare=True
    ).fetchone()
    return row[1] if row is not None and row[0] else None


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


_DEFECTS = """
WITH q AS MATERIALIZED (
    SELECT ord, vec::vector({dim}) AS vec FROM unnest(%(queries)b::vector[]) WITH ORDINALITY AS t(vec, ord)
)
SELECT q.ord - 1, n.example_id, e.defect_type, e.file_name, n.dist
FROM q CROSS JOIN LATERAL (
    SELECT d.example_id, d.embedding::vector({dim}) {op} q.vec AS dist
    FROM defect_patches d WHERE d.model_id IN ({segments})
    ORDER BY d.embedding::vector({dim}) {op} q.vec LIMIT {k}
) n JOIN defect_examples e ON e.id = n.example_id
ORDER BY q.ord, n.dist
"""


def defect_statement(model: StoredModel, k: int) -> sql.Composed | None:
    """The search of a version's defect library (``k`` nearest known defect patches of each query patch), composed
    once per version; ``None`` when the library is empty."""
    if not model.defect_segments:
        return None
    return sql.SQL(_DEFECTS).format(
        dim=sql.Literal(model.dim),
        op=sql.SQL(OPERATORS[model.config.metric]),
        segments=ids(model.defect_segments),
        k=sql.Literal(k),
    )


DEFECT_EF_SEARCH = 20


def search_defects(
    connection: psycopg.Connection, statement: sql.Composed, patches: np.ndarray, ef_search: int
) -> list[Neighbour]:
    """The nearest known defect patches of each of ``patches`` by HNSW, in one round trip.

    At an ``ef_search`` of at least ``DEFECT_EF_SEARCH``: an HNSW scan returns at most ``ef_search`` rows (a patch
    search at 4 would cut the 5 neighbours asked to 4), and no exact re-rank repairs this search, so it keeps the
    candidate list it was measured with (docs/teaching.md)."""
    _configure_session(connection, max(ef_search, DEFECT_EF_SEARCH))
    rows = connection.execute(
        statement, {"queries": list(patches.astype(np.float32, copy=False))}, prepare=True
    ).fetchall()
    return [Neighbour(int(r[0]), int(r[1]), r[2], r[3], float(r[4])) for r in rows]
