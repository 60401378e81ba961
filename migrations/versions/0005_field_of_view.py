"""The field of view of each model: the whole image (aspect ratio kept, at a pixel budget, optionally computed tile by
tile) or the centre crop. Models stored before it were fitted on the centre crop, and keep it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from alembic import op

from migrations.brief_locks import alter_briefly
from migrations.views import make_active_models

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    alter_briefly(
        "ALTER TABLE models ADD COLUMN field_of_view text NOT NULL DEFAULT 'crop' "
        "CHECK (field_of_view IN ('whole', 'crop'))"
    )
    alter_briefly("ALTER TABLE models ADD COLUMN pixels integer NOT NULL DEFAULT 50176 CHECK (pixels >= 1024)")
    alter_briefly("ALTER TABLE models ADD COLUMN tile integer NOT NULL DEFAULT 0 CHECK (tile >= 0)")
    alter_briefly("ALTER TABLE models ADD COLUMN tile_overlap integer NOT NULL DEFAULT 32 CHECK (tile_overlap >= 0)")
    for column in ("field_of_view", "pixels", "tile", "tile_overlap"):
        alter_briefly(f"ALTER TABLE models ALTER COLUMN {column} DROP DEFAULT")
    make_active_models()


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS active_models")
    op.execute("DELETE FROM models WHERE field_of_view <> 'crop'")
    for column in ("field_of_view", "pixels", "tile", "tile_overlap"):
        alter_briefly(f"ALTER TABLE models DROP COLUMN {column}")
    make_active_models()
