"""Each answer's notes, kept with its record in the inspection log: what the answer said to know before acting on it
(an image enlarged to the view more than the category's good images were, a score the re-rank's cap left
unproven), in its words, so that the log holds the whole answer a line acted on. Records written before have none
(NULL: not known); an answer without a note keeps an empty array.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-07
"""

from migrations.brief_locks import alter_briefly

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    alter_briefly("ALTER TABLE inspections ADD COLUMN IF NOT EXISTS notes text[]")


def downgrade() -> None:
    alter_briefly("ALTER TABLE inspections DROP COLUMN IF EXISTS notes")
