"""Apply the Alembic migrations in ``migrations/``; safe to call from every process at start."""

from __future__ import annotations

from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config

import migrations
from store.database import sqlalchemy_url

_LOCK_KEY = 730_115_001


def alembic_config(url: str) -> Config:
    """Alembic's configuration for the database at ``url``, for ``alembic.command`` (upgrade, downgrade...)."""
    folder = Path(migrations.__file__).parent
    config = Config(str(folder / "alembic.ini"))
    config.set_main_option("script_location", str(folder))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Bring the schema to the newest revision; concurrent callers wait on an advisory lock, then find it done."""
    config = alembic_config(url)
    with psycopg.connect(url, autocommit=True) as lock:
        lock.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            command.upgrade(config, "head")
        finally:
            lock.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
