"""The drift report's scans read a version's answers of the window from one index alone: ``(model_id, at)`` holding
what they count (verdict, score, review, part), where they went through ``at``'s index to every row of the window
in the table, rows about five times as wide. ``/metrics`` runs both scans for every loaded category at each scrape.
On 691,200 records of one version with thumbnails, 86,400 in the window (``python benchmarks/drift_scans.py --days
8``), both scans took 72.5 and 73.2 ms against 166.3 and 132.2 ms for the build before (which also formatted every
row's hour). It replaces the index on ``model_id`` alone, of which it is a prefix; 51 MiB there against 4. Built like
the earlier indexes, while the table takes no writes: 0.9 s for those 691,200 records.

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
    op.execute(
        "CREATE INDEX inspections_model_at_idx ON inspections (model_id, at) "
        "INCLUDE (is_anomalous, score, review_label, part, category)"
    )
    op.execute("DROP INDEX IF EXISTS inspections_model_idx")


def downgrade() -> None:
    op.execute("CREATE INDEX IF NOT EXISTS inspections_model_idx ON inspections (model_id)")
    op.execute("DROP INDEX IF EXISTS inspections_model_at_idx")
