"""The view of every stored good image, as the model saw it, so any API replica can show it without the dataset.

One small JPEG per image (bottle's 224x224 views: 8.9-9.8 KB), written in the same transaction as its model
and gone with it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE image_views (
            image_id bigint PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
            media_type text NOT NULL,
            width integer NOT NULL,
            height integer NOT NULL,
            data bytea NOT NULL
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS image_views")
