"""Good images taken out of a category without a refit: ``models.removed_images``, the image ids a version no longer
counts as good (``revisions.removals``).

A version reads its segments' rows less those of its removed images: their memory-bank patches, their good scores
and their image rows (look-alikes). Segments stay as written (no row is copied or deleted, no index rebuilt): the
versions before the removal still read them whole. The view ``active_models`` is made again so that it shows the
column.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def _view() -> None:
    op.execute("DROP VIEW IF EXISTS active_models")
    op.execute(
        "CREATE VIEW active_models AS SELECT c.name AS category, m.* "
        "FROM categories c JOIN models m ON m.id = c.active_model_id"
    )


def upgrade() -> None:
    op.execute("DROP VIEW IF EXISTS active_models")
    op.execute("ALTER TABLE models ADD COLUMN removed_images bigint[] NOT NULL DEFAULT '{}'")
    _view()


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS active_models")
    op.execute("ALTER TABLE models DROP COLUMN removed_images")
    _view()
