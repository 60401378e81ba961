"""Each answer's patch distances, kept with its record in the inspection log: the (rows, columns) grid of the view the
model saw, each cell's distance to the memory bank as the answer measured it (a ``real[][]``, about 3 KB at the
default view), so that the log's heatmap is the one the answer saw, drawn by the version that judged the part, and
SQL can read where on a part the distances ran high. Records written before have none (NULL); their heatmaps are
drawn by judging the kept image again.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-06
"""

from migrations.brief_locks import alter_briefly

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    alter_briefly("ALTER TABLE inspections ADD COLUMN IF NOT EXISTS patch_scores real[]")


def downgrade() -> None:
    alter_briefly("ALTER TABLE inspections DROP COLUMN IF EXISTS patch_scores")
