"""Apply the Alembic migrations in ``migrations/``; safe to call from every process at start."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config

import migrations
from store.database import sqlalchemy_url

_LOCK_KEY = 730_115_001
_POLL_SECONDS = 0.1


def alembic_config(url: str) -> Config:
    """Alembic's configuration for the database at ``url``, for ``alembic.command`` (upgrade, downgrade...)."""
    folder = Path(migrations.__file__).parent
    config = Config(str(folder / "alembic.ini"))
    config.set_main_option("script_location", str(folder))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Bring the schema to the newest revision; concurrent callers wait on an advisory lock, then find it done.

    They wait between statements, asking again every ``_POLL_SECONDS``, not inside ``pg_advisory_lock``: a statement
    waiting there holds its snapshot, an index built CONCURRENTLY by the lock's holder (migration 0024) waits for
    every older snapshot to go, and PostgreSQL cannot see that cycle (the lock is held by another session than the
    build's), so both would wait for good."""
    config = alembic_config(url)
    with psycopg.connect(url, autocommit=True) as lock:
        while not lock.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,)).fetchone()[0]:
            time.sleep(_POLL_SECONDS)
        try:
            command.upgrade(config, "head")
        finally:
            lock.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
