"""A version's care area (``patchcore.care``): the mask of where on each picture the part is inspected, as a PNG
(a few KB); null for every version fitted before, which inspects every patch cell as it was fitted to. Kept by the
versions made from a version (a threshold, added normals), as its field of view is. A fit job's too (``PUT
/jobs/{id}/care-area``), which its worker fits with and a refit of its category takes along. The view
``active_models`` is made again so that it shows the column.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-05
"""

from alembic import op

from migrations.brief_locks import alter_briefly
from migrations.views import make_active_models

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP VIEW IF EXISTS active_models")
    alter_briefly("ALTER TABLE models ADD COLUMN care_area bytea")
    alter_briefly("ALTER TABLE fit_jobs ADD COLUMN care_area bytea")
    make_active_models()


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS active_models")
    alter_briefly("ALTER TABLE models DROP COLUMN care_area")
    alter_briefly("ALTER TABLE fit_jobs DROP COLUMN care_area")
    make_active_models()
