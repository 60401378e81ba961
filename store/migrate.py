"""Apply the Alembic migrations in ``migrations/``; safe to call from every process at start."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from sqlalchemy.exc import OperationalError

import migrations
from store.database import sqlalchemy_url

_LOCK_KEY = 730_115_001
_POLL_SECONDS = 0.1
_RETRY_SECONDS = 1.0  # between tries of a revision that gave up waiting for a table's lock (migrations.brief_locks)
_SAY_EVERY_SECONDS = 30.0

_log = logging.getLogger(__name__)

_HOLDERS = """
SELECT DISTINCT a.pid, a.application_name, a.state, a.query_start, left(a.query, 120)
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.relation = to_regclass(%s) AND l.granted AND a.pid <> pg_backend_pid()
ORDER BY a.query_start NULLS LAST
"""


def alembic_config(url: str) -> Config:
    """Alembic's configuration for the database at ``url``, for ``alembic.command`` (upgrade, downgrade...)."""
    folder = Path(migrations.__file__).parent
    config = Config(str(folder / "alembic.ini"))
    config.set_main_option("script_location", str(folder))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema to the newest revision (or ``revision``); concurrent callers wait on an advisory lock, then
    find it done.

    They wait between statements, asking again every ``_POLL_SECONDS``, not inside ``pg_advisory_lock``: a statement
    waiting there holds its snapshot, an index built CONCURRENTLY by the lock's holder (migration 0024) waits for
    every older snapshot to go, and PostgreSQL cannot see that cycle (the lock is held by another session than the
    build's), so both would wait for good."""
    config = alembic_config(url)
    with psycopg.connect(url, autocommit=True) as lock:
        while not lock.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,)).fetchone()[0]:
            time.sleep(_POLL_SECONDS)
        try:
            _upgrade_patiently(config, revision, lock)
        finally:
            lock.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))


def _upgrade_patiently(config: Config, revision: str, connection: psycopg.Connection) -> None:
    """``alembic upgrade`` to ``revision``, tried again for as long as a revision gives up waiting for a table's
    lock (``migrations.brief_locks``): each try holds up the table's readers and writers for a moment at most, never
    for as long as the transaction in the way runs. Who holds the table is said at the first wait and every half
    minute after, so that a session left idle in a transaction can be found and ended."""
    said = -_SAY_EVERY_SECONDS
    started = time.monotonic()
    while True:
        try:
            command.upgrade(config, revision)
            return
        except OperationalError as error:
            if not isinstance(error.orig, psycopg.errors.LockNotAvailable):
                raise
            statement = error.statement or ""
        waited = time.monotonic() - started
        if waited - said >= _SAY_EVERY_SECONDS:
            said = waited
            table = _altered(statement)
            holders = "; ".join(
                f"pid {pid} ({name or 'no application name'}, {state}, since {since or 'its start'}): {query}"
                for pid, name, state, since, query in connection.execute(_HOLDERS, (table,))
            )
            what = f"table {table}" if table else f"the lock of {statement[:120]!r}"
            _log.warning("migration waits %.0f s for %s, held by %s", waited, what, holders or "nobody now")
        time.sleep(_RETRY_SECONDS)


def _altered(statement: str) -> str | None:
    """The table an ALTER TABLE statement changes (the migrations' own statements: plain names), else ``None``."""
    found = re.match(r"\s*ALTER TABLE (?:IF EXISTS )?(?:ONLY )?([\w.]+)", statement, flags=re.I)
    return found.group(1) if found else None
