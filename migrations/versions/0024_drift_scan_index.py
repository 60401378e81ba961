"""The drift report's scans read a version's answers of the window from one index alone: ``(model_id, at)`` holding
what they count (verdict, score, review, part), where they went through ``at``'s index to every row of the window
in the table, rows about five times as wide. ``/metrics`` runs both scans for every loaded category at each scrape.
On 691,200 records of one version with thumbnails, 86,400 in the window (``python benchmarks/drift_scans.py --days
8``), both scans took 72.5 and 73.2 ms against 166.3 and 132.2 ms for the build before (which also formatted every
row's hour). It replaces the index on ``model_id`` alone, of which it is a prefix; 51 MiB there against 4.

Built CONCURRENTLY, outside a transaction: a plain build blocks the log's writes for as long as it takes (0.9 s for
those 691,200 records, minutes for a log of years), and a record the database cannot take within
``INSPECT_LOG_TIMEOUT_MS`` is a refused answer. On those records, with a record written every 10 ms meanwhile (a
scratch script, two rounds), the longest write took 24.8 and 31.1 ms during this migration against 478.3 and
540.6 ms, the whole build, during a plain CREATE INDEX. An interrupted build leaves an invalid index of the same
name behind, dropped before building again (the revision is recorded only once every statement has run).

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-04
"""

from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS inspections_model_at_idx")
        op.execute(
            "CREATE INDEX CONCURRENTLY inspections_model_at_idx ON inspections (model_id, at) "
            "INCLUDE (is_anomalous, score, review_label, part, category)"
        )
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS inspections_model_idx")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS inspections_model_idx")
        op.execute("CREATE INDEX CONCURRENTLY inspections_model_idx ON inspections (model_id)")
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS inspections_model_at_idx")
