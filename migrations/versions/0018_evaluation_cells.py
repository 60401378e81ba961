"""Each fit's evaluation, cell by cell: every test image's patch distances and its ground truth on the patch grid
(patchcore.regions.packed), so that a new threshold judges the defect regions again as it judges the verdicts,
without the test images or their masks. One row per fit (its model id, as its plots), shared by its versions.
Fits stored before have none; their regions keep the threshold they were measured at.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02
"""

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE evaluation_cells (
            model_id bigint PRIMARY KEY REFERENCES models(id) ON DELETE CASCADE,
            cells bytea NOT NULL
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS evaluation_cells")
