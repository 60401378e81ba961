"""Writing a fitted category into PostgreSQL, and checking what landed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg

from config import get_settings
from patchcore.model import FittedModel
from store import banks, models
from store.database import connect, database_url
from store.migrate import upgrade


def store_model(
    category: str,
    model: FittedModel,
    report: dict,
    plots: list[Path],
    actor: str = "ingest",
    within: Callable[[psycopg.Connection, int], None] | None = None,
    cells: bytes | None = None,
) -> dict:
    """Save ``model`` as ``category``'s active model in one transaction, with its evaluation plots, retire the fits
    no longer kept (``INSPECT_FITS_KEPT``), verify the counts. ``within(connection, model_id)`` runs inside that
    transaction (a fit job records its success there); an exception from it rolls the version back.
    ``cells``: the evaluation cell by cell, kept so that a later threshold judges its defect regions again."""
    settings = get_settings()
    url = database_url(settings)
    upgrade(url)
    evaluation = {k: v for k, v in report.items() if k not in ("good_scores", "config", "threshold_policy", "plots")}
    with connect(url) as connection:
        connection.execute("SET application_name = 'patchcore-ingest'")
        connection.commit()
        figures = {path.stem: path.read_bytes() for path in plots}
        with connection.transaction():
            load = models.save_model(
                connection, category, model, evaluation, settings, actor, plots=figures, cells=cells
            )
            if within is not None:
                within(connection, int(load["model_id"]))
    with connect(url, autocommit=True) as connection:
        retired = models.retire_old_models(connection, category, settings.fits_kept)
        stored = banks.patch_count(connection, [int(load["model_id"])])
    if stored != model.memory_bank.shape[0]:
        raise RuntimeError(f"{category}: {stored} patch rows stored, {model.memory_bank.shape[0]} expected")
    print(
        f"stored {category}: model {load['model_id']}, {stored} patches at {load['copy_rows_per_second']:.0f} rows/s, "
        f"HNSW index built in {load['index_seconds']:.1f} s, {retired} older version(s) retired "
        f"({settings.fits_kept} fit(s) kept: INSPECT_FITS_KEPT)",
        flush=True,
    )
    return {"model_id": load["model_id"], "store": load}
