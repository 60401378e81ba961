"""A key per inspection record, drawn by the API before the record is written, so that a write whose outcome is
unknown (the commit was sent, its acknowledgement lost when the database went away) can be settled once the database
is back: written again without a second row (``wait``), or taken back (a refused answer).

Nullable and without a default, so that the upgrade is a change of the catalogue only, not a rewrite of a log that
may hold years of thumbnails; records older than this revision have no key and need none. The column's change waits
for its lock briefly and the index is built CONCURRENTLY, so that the log keeps taking records meanwhile
(:mod:`migrations.brief_locks`, migration 0024).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from alembic import op

from migrations.brief_locks import alter_briefly

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    alter_briefly("ALTER TABLE inspections ADD COLUMN IF NOT EXISTS record_key uuid")
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS inspections_record_key_idx")
        op.execute("CREATE UNIQUE INDEX CONCURRENTLY inspections_record_key_idx ON inspections (record_key)")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS inspections_record_key_idx")
    alter_briefly("ALTER TABLE inspections DROP COLUMN IF EXISTS record_key")
