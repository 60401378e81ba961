"""What kind of picture each good image is: ``images.colour`` is ``grey`` for a file of one channel, ``colour`` for a
colour file whose view has colour, ``neutral`` for a colour file without any (``patchcore.views.colouring``), so that
an answer can say when an upload is a grey file and every good image of its category has colour, or the reverse (the
model never compared such a picture with good parts). Images stored before say nothing (NULL: not known), and their
categories get no such note until a fit (or a refit) says.

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-07
"""

from migrations.brief_locks import alter_briefly

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    alter_briefly("ALTER TABLE images ADD COLUMN IF NOT EXISTS colour text")


def downgrade() -> None:
    alter_briefly("ALTER TABLE images DROP COLUMN IF EXISTS colour")
