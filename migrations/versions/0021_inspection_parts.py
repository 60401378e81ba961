"""What names an inspected image on the line: the part it shows (``part`` on ``POST /query``: a serial number, a
tray position; the views of one part share it, in one category or several) and the file name the upload carried. A
line that rejects a part on any flagged view reads its verdict from them (``GET /parts/{part}``), and a complaint
about part SN-1234 finds every picture of it; before, a record said only what the image was (its hash, its size).
The index is built CONCURRENTLY, outside the transaction, so that the log keeps taking records while it scans them
(migration 0024 says why); the columns are added ``IF NOT EXISTS``, so that a build interrupted after they were
committed runs again, and their change waits for its lock briefly (:mod:`migrations.brief_locks`).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-02
"""

from alembic import op

from migrations.brief_locks import alter_briefly

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    alter_briefly("ALTER TABLE inspections ADD COLUMN IF NOT EXISTS part text, ADD COLUMN IF NOT EXISTS file_name text")
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS inspections_part_idx")
        op.execute(
            "CREATE INDEX CONCURRENTLY inspections_part_idx ON inspections (part, id DESC) WHERE part IS NOT NULL"
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS inspections_part_idx")
    alter_briefly("ALTER TABLE inspections DROP COLUMN IF EXISTS part, DROP COLUMN IF EXISTS file_name")
