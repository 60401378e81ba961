"""Each logged answer's p-value: the share of good parts expected to score as high as it did, read from the good
scores of the version that judged it. Scores differ by category, backbone and view; p-values do not, so the log can
rank the parts of every product on one scale (``ORDER BY p_value``) and a verdict can be read again at any false-alarm
rate. Records from before it have none (NULL): their versions' good scores are kept, but the answer was not.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-03
"""

from migrations.brief_locks import alter_briefly

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    alter_briefly("ALTER TABLE inspections ADD COLUMN IF NOT EXISTS p_value double precision")


def downgrade() -> None:
    alter_briefly("ALTER TABLE inspections DROP COLUMN IF EXISTS p_value")
