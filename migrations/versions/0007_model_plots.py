"""The evaluation plots of each fitted model (ROC, score histogram with the threshold, heatmaps), stored with it so
any API replica can show them on the category page without the job's reports folder.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE model_plots (
            model_id bigint NOT NULL REFERENCES models(id) ON DELETE CASCADE,
            name text NOT NULL CHECK (name ~ '^[a-z0-9_]+$'),
            media_type text NOT NULL,
            data bytea NOT NULL,
            PRIMARY KEY (model_id, name)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS model_plots")
