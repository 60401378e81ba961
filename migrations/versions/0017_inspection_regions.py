"""The defect regions of each answer, kept with its record in the inspection log: where on the part each flagged
inspection was defective (boxes in the upload's pixels, worst first; an empty list for a normal answer), for the
review page and for SQL over a line's history. Records written before have none (NULL), not an empty list: nobody
knows where their defects were.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02
"""

from migrations.brief_locks import alter_briefly

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    alter_briefly("ALTER TABLE inspections ADD COLUMN IF NOT EXISTS regions jsonb")


def downgrade() -> None:
    alter_briefly("ALTER TABLE inspections DROP COLUMN IF EXISTS regions")
