"""Models (a category's versions): storing a fit, reading the active version, retiring the versions no one uses.

Each fitted model owns its rows in ``images`` and its segment of ``patches`` (:mod:`store.banks`); a version made
later (a threshold, added normals, defect examples: :mod:`store.versions`) lists the segments it reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import psycopg

from config import Settings
from patchcore.model import FittedModel, PatchCoreConfig
from store.banks import drop_segments, serialise_version_writers, write_segment
from store.changes import log_change
from store.evaluations import write_cells
from store.images import write_images
from store.jobs import drop_retired_images


@dataclass(frozen=True)
class StoredModel:
    """A category's version as the database holds it."""

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
    threshold_policy: dict
    bank_segments: tuple[int, ...]
    defect_segments: tuple[int, ...]
    coverage_radius: float | None

    @property
    def dim(self) -> int:
        return self.config.embedding_dim

    @property
    def fit_id(self) -> int:
        """The fitted model this version descends from: it owns the first segment, the fit's plots and figures."""
        return self.bank_segments[0]


MAX_DIM = 2000
RETIRING = (7413, 0)  # held by one retirement at a time, and by a reactivation (version writers 7412, jobs 7411)

# what decides a patch's embedding: a defect library stays valid across a refit only if all of them are equal
_EMBEDDING = (
    "backbone, layers, weights_sha256, field_of_view, resize, crop, pixels, tile, tile_overlap, white_level, "
    "jpeg_scaling"
)


def check_dimension(dim: int) -> None:
    """Refuse what pgvector's HNSW index (and an inline heap row, migration 0002) cannot hold, before any work."""
    if not 1 <= dim <= MAX_DIM:
        raise ValueError(
            f"{dim}-dimensional patches cannot be stored: pgvector's HNSW index takes at most {MAX_DIM} dimensions; "
            "use fewer or shallower --layers (layer2,layer3 gives 384 to 1536)"
        )


def save_model(
    connection: psycopg.Connection,
    category: str,
    model: FittedModel,
    evaluation: dict,
    settings: Settings,
    actor: str = "ingest",
    plots: dict[str, bytes] | None = None,
    cells: bytes | None = None,
) -> dict[str, float]:
    """Write ``model`` as the category's new active model, in ONE transaction.

    Readers see the previous model until the commit and the new one after it; an error or a kill before the
    commit leaves the previous model untouched. The defect library of the previous version is kept when the new
    model embeds patches exactly as it did (same network, weights and field of view). ``cells``: the evaluation cell by
    cell (:func:`patchcore.regions.packed`), kept for later thresholds. Returns load timings."""
    config = model.config
    dim = config.embedding_dim
    check_dimension(dim)
    with connection.transaction(), connection.cursor() as cursor:
        serialise_version_writers(cursor)
        cursor.execute("INSERT INTO categories (name) VALUES (%s) ON CONFLICT (name) DO NOTHING", (category,))
        cursor.execute("SELECT id, active_model_id FROM categories WHERE name = %s FOR UPDATE", (category,))
        category_id, previous_id = cursor.fetchone()
        model_id = cursor.execute("SELECT nextval(pg_get_serial_sequence('models', 'id'))").fetchone()[0]
        cursor.execute(
            """
            INSERT INTO models (id, category_id, backbone, layers, resize, crop, metric, coreset_ratio, num_neighbors,
                holdout_fraction, false_alarm_rate, seed, embedding_dim, grid_height, grid_width, weights,
                weights_sha256, threshold, memory_bank_size, evaluation, timings, threshold_policy, field_of_view,
                pixels, tile, tile_overlap, coverage_radius, white_level, jpeg_scaling, care_area, bank_segments)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                %s, %s, %s, %s, %s, %s, ARRAY[%s::bigint])
            """,
            (
                model_id, category_id, config.backbone, list(config.layers), config.resize, config.crop,
                config.metric, config.coreset_ratio, config.num_neighbors, config.holdout_fraction,
                config.false_alarm_rate, config.seed, dim, model.grid[0], model.grid[1], model.weights,
                model.weights_sha256, model.threshold, int(model.memory_bank.shape[0]), json.dumps(evaluation),
                json.dumps(model.timings), json.dumps(model.threshold_policy), config.field_of_view, config.pixels,
                config.tile, config.tile_overlap, model.coverage_radius, config.white_level, config.jpeg_scaling,
                config.care_area, model_id,
            ),
        )  # fmt: skip
        kept = cursor.execute(
            f"UPDATE models m SET defect_segments = p.defect_segments FROM models p WHERE m.id = %s AND p.id = %s "
            f"AND ({', '.join('m.' + c for c in _EMBEDDING.split(', '))}) "
            f"IS NOT DISTINCT FROM ({', '.join('p.' + c for c in _EMBEDDING.split(', '))}) "
            "RETURNING cardinality(m.defect_segments)",
            (model_id, previous_id),
        ).fetchone()
        image_ids = write_images(cursor, model_id, model.images, model.image_embeddings.numpy())
        if cells is not None:
            write_cells(cursor, model_id, cells)
        for name, data in (plots or {}).items():
            cursor.execute(
                "INSERT INTO model_plots (model_id, name, media_type, data) VALUES (%s, %s, 'image/png', %s)",
                (model_id, name, data),
            )
        bank = model.memory_bank.numpy().astype(np.float32)
        sources = model.bank_image.tolist()
        positions = model.bank_position.tolist()
        timings = write_segment(
            cursor, "patches", model_id, ("model_id", "image_id", "grid_row", "grid_col", "embedding"),
            ("int8", "int8", "int2", "int2", "vector"),
            ((model_id, image_ids[sources[i]], positions[i][0], positions[i][1], bank[i]) for i in range(len(bank))),
            dim, config.metric, settings,
        )  # fmt: skip
        cursor.execute("UPDATE categories SET active_model_id = %s WHERE id = %s", (model_id, category_id))
        log_change(
            cursor, category_id, model_id, actor, "fit",
            {"memory_bank_size": int(model.memory_bank.shape[0]), "threshold": model.threshold,
             "threshold_policy": model.threshold_policy.get("kind"), "previous_model_id": previous_id,
             "defect_library_kept": bool(kept and kept[0]),
             **({"care_area_share": config.care.summary()["share"]} if config.care is not None else {})},
        )  # fmt: skip
    timings.pop("rows")
    timings["model_id"] = model_id
    return timings


def retire_old_models(connection: psycopg.Connection, category: str, fits_kept: int) -> int:
    """Drop the category's versions that belong to none of its ``fits_kept`` kept fits and own no segment a kept
    version reads: detach their segments without blocking readers, drop them, delete the model rows (their images and
    defect examples go with them), then the stored images of the jobs whose fits went. Newest first, so a version
    made without a refit goes before the versions whose segments it read.

    The kept fits are the active version's and those in service most recently before it (by the change log: a fit,
    a version made from it or made active again), each with every version made from it (a threshold or a teaching is
    one small row and its own few patches) and every segment one of them reads, so that the category can go back to
    any of them, across a refit too (:func:`store.versions.reactivate`). With no active version (a deleted category)
    nothing is kept. ``fits_kept`` 1: a refit retires every earlier fit.

    Runs after the new version is committed; a query that still holds an old model id finds no rows and retries
    with the new one (see :func:`store.search.search`). ``connection`` must be in autocommit mode. A retirement cut
    short is finished by the next one. One retirement at a time (a session advisory lock, since detaching
    concurrently cannot run in a transaction): a threshold set on one server tidies up while a refit's own
    retirement runs, and two of them detaching the same segment made the second fail with a 500 in a mixed soak; the
    later one now waits, then finds what is left."""
    if fits_kept < 1:
        raise ValueError(f"fits_kept is {fits_kept}: at least the active version's fit is kept")
    connection.execute("SELECT pg_advisory_lock(%s, %s)", RETIRING)
    try:
        return _retire(connection, category, "{v}.bank_segments[1] NOT IN (SELECT fit FROM kept)", fits_kept)
    finally:
        connection.execute("SELECT pg_advisory_unlock(%s, %s)", RETIRING)


class FitInService(Exception):
    """The fit asked to retire is the one answering: make a version of another fit active first."""


def retire_fit(connection: psycopg.Connection, category: str, fit: int, actor: str) -> int:
    """Retire the kept fit ``fit`` of ``category`` now, rather than at a later fit (its memory bank, versions and job
    images, as :func:`retire_old_models` would; a segment of it that another fit's version reads, known defects
    carried over, stays), and log it; returns how many versions went. Raises ``LookupError`` when the category keeps
    no such fit and :class:`FitInService` when it is the active version's. Under the retirement lock, which a
    version made active again also takes, so that the fit cannot become the answering one meanwhile."""
    connection.execute("SELECT pg_advisory_lock(%s, %s)", RETIRING)
    try:
        row = connection.execute(
            "SELECT c.id, a.bank_segments[1] FROM categories c JOIN models a ON a.id = c.active_model_id "
            "JOIN models f ON f.category_id = c.id AND f.id = %s AND f.bank_segments[1] = f.id WHERE c.name = %s",
            (fit, category),
        ).fetchone()
        if row is None:
            raise LookupError(f"{category} keeps no fit {fit}: GET /categories/{category} lists its kept fits")
        category_id, answering = row
        if answering == fit:
            raise FitInService(f"fit {fit} of {category} is answering: make a version of another fit active first")
        retired = _retire(connection, category, "{v}.bank_segments[1] = %(fit)s", None, fit=fit)
        with connection.transaction(), connection.cursor() as cursor:
            log_change(cursor, category_id, fit, actor, "fit_retired", {"versions": retired})
        return retired
    finally:
        connection.execute("SELECT pg_advisory_unlock(%s, %s)", RETIRING)


def _retire(connection: psycopg.Connection, category: str, retiring: str, fits_kept: int | None, **params) -> int:
    """Drop the versions whose fit ``retiring`` names (SQL over a version ``{v}``; with ``fits_kept``, ``kept``
    holds the first ``fits_kept`` fits of :data:`_KEPT_FITS`), but the active one and those a version of another fit
    reads."""
    kept = f"WITH kept AS ({_KEPT_FITS}) " if fits_kept is not None else ""
    model_ids = connection.execute(
        f"{kept}SELECT m.id FROM models m JOIN categories c ON c.id = m.category_id "
        f"WHERE c.name = %(name)s AND m.id IS DISTINCT FROM c.active_model_id AND {retiring.format(v='m')} "
        "AND NOT EXISTS (SELECT 1 FROM models k WHERE k.category_id = m.category_id "
        f"AND NOT ({retiring.format(v='k')}) AND m.id = ANY(k.bank_segments || k.defect_segments)) "
        "ORDER BY m.id DESC",
        {"name": category, "kept": fits_kept, **params},
    ).fetchall()
    for (model_id,) in model_ids:
        drop_segments(connection, model_id)
        connection.execute("DELETE FROM models WHERE id = %s", (model_id,))
    drop_retired_images(connection, category)
    return len(model_ids)


# The category's kept fits (column ``fit``, the id of the version that owns a fit's first segment), for the
# parameters ``name`` and ``kept``: the active version's fit first, then the others by when they were last in
# service (the latest change that made one of their versions active), newest first; none without an active version.
_KEPT_FITS = """
    SELECT f.fit FROM (
        SELECT v.bank_segments[1] AS fit, max(ch.id) AS last, bool_or(v.id = c.active_model_id) AS active
        FROM categories c JOIN models v ON v.category_id = c.id
        LEFT JOIN category_changes ch ON ch.category_id = c.id AND ch.model_id = v.id
        WHERE c.name = %(name)s AND c.active_model_id IS NOT NULL
          AND EXISTS (SELECT 1 FROM models o WHERE o.id = v.bank_segments[1])
        GROUP BY v.bank_segments[1]
    ) f ORDER BY f.active DESC, f.last DESC NULLS LAST, f.fit DESC LIMIT %(kept)s
"""


_MODEL_COLUMNS = """
    m.id, c.id, c.name, m.backbone, m.layers, m.resize, m.crop, m.metric, m.coreset_ratio, m.num_neighbors,
    m.holdout_fraction, m.false_alarm_rate, m.seed, m.weights, m.weights_sha256, m.threshold, m.grid_height,
    m.grid_width, m.memory_bank_size, m.evaluation, m.timings, m.fitted_at::text, m.threshold_policy,
    m.field_of_view, m.pixels, m.tile, m.tile_overlap, m.bank_segments, m.defect_segments, m.coverage_radius,
    m.white_level, m.jpeg_scaling, m.care_area
"""


def _stored(row: tuple) -> StoredModel:
    model_id, category_id, name, backbone, layers, resize, crop, metric, ratio, b, holdout, rate, seed = row[:13]
    weights, weights_sha256, threshold, height, width, size, evaluation, timings, fitted_at, policy = row[13:23]
    field_of_view, pixels, tile, tile_overlap, bank_segments, defect_segments, radius, white, jpeg_scaling = row[23:32]
    care = row[32]
    config = PatchCoreConfig(
        backbone=backbone, layers=tuple(layers), field_of_view=field_of_view, resize=resize, crop=crop,
        pixels=pixels, tile=tile, tile_overlap=tile_overlap, metric=metric, coreset_ratio=ratio,
        num_neighbors=b, holdout_fraction=holdout, false_alarm_rate=rate, seed=seed, white_level=white,
        jpeg_scaling=jpeg_scaling, care_area=bytes(care) if care is not None else None,
    )  # fmt: skip
    return StoredModel(
        id=model_id, category_id=category_id, category=name, config=config, weights=weights,
        weights_sha256=weights_sha256, threshold=threshold, grid=(height, width), memory_bank_size=size,
        evaluation=evaluation, timings=timings, fitted_at=fitted_at, threshold_policy=policy,
        bank_segments=tuple(bank_segments), defect_segments=tuple(defect_segments), coverage_radius=radius,
    )  # fmt: skip


def _one(connection: psycopg.Connection, joined: str, key: object) -> StoredModel | None:
    """The version ``joined`` (``models m`` with ``categories c``, and the condition on ``key``) finds, or None."""
    row = connection.execute(f"SELECT {_MODEL_COLUMNS} FROM {joined}", (key,)).fetchone()
    return _stored(row) if row else None


def active_model(connection: psycopg.Connection, category: str) -> StoredModel | None:
    return _one(connection, "categories c JOIN models m ON m.id = c.active_model_id WHERE c.name = %s", category)


def model_by_id(connection: psycopg.Connection, model_id: int) -> StoredModel | None:
    """A version by its id, active or not; None once it is retired (its row deleted)."""
    return _one(connection, "models m JOIN categories c ON c.id = m.category_id WHERE m.id = %s", model_id)


def active_ids(connection: psycopg.Connection) -> dict[str, int]:
    """Each category's active version, by name: one short read an API process repeats to follow new versions."""
    return dict(connection.execute("SELECT name, active_model_id FROM categories WHERE active_model_id IS NOT NULL"))


def active_models(connection: psycopg.Connection) -> list[StoredModel]:
    rows = connection.execute(
        f"SELECT {_MODEL_COLUMNS} FROM categories c JOIN models m ON m.id = c.active_model_id ORDER BY c.name"
    ).fetchall()
    return [_stored(row) for row in rows]
