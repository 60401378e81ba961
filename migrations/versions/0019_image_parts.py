"""The part each good image is one view of, where the set says (Real-IAD's samples, KolektorSDD's folders): a part
photographed several times is judged by its worst view, so what the good images predict per part is kept with each
version and said again at every new threshold. Images stored before, and images of one view each, have none.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02
"""

from migrations.brief_locks import alter_briefly

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    alter_briefly("ALTER TABLE images ADD COLUMN part text")


def downgrade() -> None:
    alter_briefly("ALTER TABLE images DROP COLUMN IF EXISTS part")
