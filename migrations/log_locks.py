"""A change to the inspection log's columns that waits for its lock briefly. An ALTER TABLE needs the table to
itself, so it waits for every statement reading or writing the log (a ``pg_dump`` of ``ingest db-dump``, someone's
query in psql), and every record asked for after it queues behind it: with no limit, one long query holds up every
answer for as long as it runs, and a record not taken within ``INSPECT_LOG_TIMEOUT_MS`` is a refused answer. So the
change gives up after :data:`LOCK_WAIT_MS`, its revision rolls back whole, the records queued behind it go in, and
:func:`store.migrate.upgrade` tries again a moment later."""

from alembic import op

LOCK_WAIT_MS = 200  # well below INSPECT_LOG_TIMEOUT_MS's default (5,000): what a record may wait behind one try


def alter_log(statement: str) -> None:
    """Run ``statement`` (an ALTER TABLE of ``inspections``, written so that running it twice is harmless: ``IF NOT
    EXISTS``) waiting at most :data:`LOCK_WAIT_MS` for its lock; the limit ends with the revision's transaction."""
    op.execute(f"SET LOCAL lock_timeout = '{LOCK_WAIT_MS}ms'")
    op.execute(statement)
