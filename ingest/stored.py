"""The stored category a command works on."""

from __future__ import annotations

import psycopg

from store import models
from store.names import near


def active_model(connection: psycopg.Connection, category: str) -> models.StoredModel:
    """The category's active version, or the error that says how to make one."""
    model = models.active_model(connection, category)
    if model is None:
        raise ValueError(f"category {category} is not in the database{near(category, models.active_ids(connection))}; "
                         "run `python -m ingest fit` first")  # fmt: skip
    return model
