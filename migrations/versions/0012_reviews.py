"""A person's review of a logged inspection: what the part really was (good, or a defect type), who said so (the
API key's name, or the address where the service is open), when, and the version the lesson made when it taught the
category (the feedback API) rather than only recording the review.

Nullable columns without a default: a change of the catalogue only, not a rewrite of the log. The partial index
serves the review page's "not yet reviewed" filter, newest first.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE inspections ADD COLUMN reviewed_at timestamptz, ADD COLUMN reviewed_by text, "
        "ADD COLUMN review_label text, ADD COLUMN review_model_id bigint"
    )
    op.execute("CREATE INDEX inspections_unreviewed_idx ON inspections (category, id DESC) WHERE reviewed_at IS NULL")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS inspections_unreviewed_idx")
    op.execute(
        "ALTER TABLE inspections DROP COLUMN IF EXISTS reviewed_at, DROP COLUMN IF EXISTS reviewed_by, "
        "DROP COLUMN IF EXISTS review_label, DROP COLUMN IF EXISTS review_model_id"
    )
