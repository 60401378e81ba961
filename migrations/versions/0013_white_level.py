"""The white level of a category's grayscale images of more than 8 bits: the sample value read as white, fixed at
the fit from the training images (``patchcore.images.white_level``) and applied to every query, so a 12-bit camera's
images saved in 16-bit files reach the network as 12-bit images, not nearly black.

Nullable: NULL (every version fitted before, and every category whose images have 8 bits) reads such samples against
the file's full range, as before. The view ``active_models`` is made again so that it shows the column.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

from alembic import op

from migrations.brief_locks import alter_briefly
from migrations.views import make_active_models

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP VIEW IF EXISTS active_models")
    alter_briefly("ALTER TABLE models ADD COLUMN white_level integer CHECK (white_level >= 1)")
    make_active_models()


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS active_models")
    alter_briefly("ALTER TABLE models DROP COLUMN white_level")
    make_active_models()
