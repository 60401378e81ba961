"""A person's review of a logged inspection: what the part really was (good, or a defect type), who said so (the
API key's name, or the address where the service is open), when, and the version the lesson made when it taught the
category (the feedback API) rather than only recording the review.

Nullable columns without a default: a change of the catalogue only, not a rewrite of the log. The partial index
serves the review page's "not yet reviewed" filter, newest first. It is built CONCURRENTLY, outside the
transaction, as every index on the log built after the log's first records can be (migration 0024 says why: a plain
build blocks the log's writes for as long as it takes, and every record holds when this runs: none is reviewed);
the columns are added ``IF NOT EXISTS``, so that a build interrupted after they were committed runs again, and
their change waits for its lock briefly (:mod:`migrations.brief_locks`).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

from alembic import op

from migrations.brief_locks import alter_briefly

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    alter_briefly(
        "ALTER TABLE inspections ADD COLUMN IF NOT EXISTS reviewed_at timestamptz, "
        "ADD COLUMN IF NOT EXISTS reviewed_by text, ADD COLUMN IF NOT EXISTS review_label text, "
        "ADD COLUMN IF NOT EXISTS review_model_id bigint"
    )
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS inspections_unreviewed_idx")
        op.execute(
            "CREATE INDEX CONCURRENTLY inspections_unreviewed_idx ON inspections (category, id DESC) "
            "WHERE reviewed_at IS NULL"
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS inspections_unreviewed_idx")
    alter_briefly(
        "ALTER TABLE inspections DROP COLUMN IF EXISTS reviewed_at, DROP COLUMN IF EXISTS reviewed_by, "
        "DROP COLUMN IF EXISTS review_label, DROP COLUMN IF EXISTS review_model_id"
    )
