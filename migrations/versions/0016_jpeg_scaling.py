"""Whether a version's JPEGs are decoded at a reduced DCT scale (``patchcore.views.Preprocess.least``): libjpeg
decodes a 12-megapixel JPEG at a quarter of each side in 15.5 ms instead of 119 ms, and twice the view on each side
is still there for the resize to shrink. A query must be decoded as the version's fit decoded its training images,
so the choice is kept with the version: false for every version fitted before (their JPEGs are decoded in full, as
they were fitted), true for new fits (set by the fit that stores them). The view ``active_models`` is made again so
that it shows the column.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01
"""

from alembic import op

from migrations.brief_locks import alter_briefly
from migrations.views import make_active_models

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP VIEW IF EXISTS active_models")
    alter_briefly("ALTER TABLE models ADD COLUMN jpeg_scaling boolean NOT NULL DEFAULT false")
    make_active_models()


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS active_models")
    alter_briefly("ALTER TABLE models DROP COLUMN jpeg_scaling")
    make_active_models()
