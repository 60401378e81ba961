"""The stored category a command works on."""

from __future__ import annotations

import psycopg

from store import models
from store.names import near


def active_model(connection: psycopg.Connection, category: str) -> models.StoredModel:
    """The category's active version, or the error that says how to make one."""
    model = models.active_model(connection, category)
    if model is None:
        raise ValueError(f"{not_stored(connection, category)}; run `python -m ingest fit` first")
    return model


def not_stored(connection: psycopg.Connection, category: str) -> str:
    """That ``category`` is not in the database, naming the stored categories near its name (another case, a typo)."""
    return f"category {category} is not in the database{near(category, models.active_ids(connection))}"
