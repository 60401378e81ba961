"""Changes to a table that wait for its lock briefly. An ALTER TABLE needs its table to itself, so it waits for every
transaction that has read or written the table (a fit being saved, a ``pg_dump`` of ``ingest db-dump``, someone's
query in psql), and every statement on the table asked for after it queues behind it: with no limit, one long
transaction holds up, for as long as it runs, every answer (each reads ``categories`` and, for its look-alikes,
``images``, and writes a record to ``inspections``, which is refused if not taken within
``INSPECT_LOG_TIMEOUT_MS``), every server loading a version (it reads ``models``), every poll of the fit queue,
every page. So every ALTER TABLE of the migrations gives up after :data:`LOCK_WAIT_MS`, its revision rolls back
whole, what queued behind it goes on, and :func:`store.migrate.upgrade` tries again a moment later. (Of a table its
own revision has just made, the lock is already held: no wait.)"""

from alembic import op

LOCK_WAIT_MS = 200  # well below INSPECT_LOG_TIMEOUT_MS's default (5,000): what a statement may wait behind one try


def alter_briefly(statement: str) -> None:
    """Run ``statement``, an ALTER TABLE, waiting at most :data:`LOCK_WAIT_MS` for its lock; the limit holds until
    the revision's transaction ends. A revision run again after giving up must find nothing half done: its
    transaction rolled back, or, where it commits part of its work early (an index built CONCURRENTLY), written so
    that running it twice is harmless (``IF NOT EXISTS``)."""
    op.execute(f"SET LOCAL lock_timeout = '{LOCK_WAIT_MS}ms'")
    op.execute(statement)
