"""Partition ``patches`` by model: each fitted model's memory bank is its own table, ``patches_model_<id>``.

With one table for every category, the served search's exact re-rank (a scan of the model's rows) read every
category's rows: with bottle (384 dims) beside one 1536-dim category, each re-ranked patch scanned 17,826 pages
instead of bottle's ~3,000, and every re-ingest left 14,740 deleted rows behind for VACUUM. As a partition, a model's
rows are scanned alone (the model id is a literal in the search, so the planner prunes the others), its HNSW indexes
are plain indexes of its own table, and retiring it drops the table.

Existing models are moved into their partitions here, and their HNSW indexes rebuilt with the options they had.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from alembic import op
from sqlalchemy import text

from migrations.brief_locks import alter_briefly

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_COLUMNS = "id, model_id, image_id, grid_row, grid_col, embedding"


def _hnsw_indexes(bind, table: str) -> list[tuple[str, str, str]]:
    """(name, definition, model id) of the per-model HNSW indexes on ``table``."""
    rows = bind.execute(
        text(
            "SELECT indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = current_schema() AND tablename = :table AND indexname ~ '^patches_model_[0-9]+_' "
            "AND indexdef LIKE '%USING hnsw%'"
        ),
        {"table": table},
    ).fetchall()
    return [(name, definition, name.split("_")[2]) for name, definition in rows]


def _moved(definition: str, old: str, new: str) -> str:
    """An index definition moved from table ``old`` to ``new``; refuses to guess if the text is not as expected."""
    moved = definition.replace(f" ON {old} ", f" ON {new} ", 1).replace(f" ON public.{old} ", f" ON {new} ", 1)
    if moved == definition:
        raise RuntimeError(f"cannot move index to {new}: unexpected definition {definition}")
    return moved


def upgrade() -> None:
    bind = op.get_bind()
    alter_briefly("ALTER TABLE patches RENAME TO patches_unpartitioned")
    op.execute("ALTER INDEX patches_pkey RENAME TO patches_unpartitioned_pkey")
    op.execute("ALTER INDEX patches_model_idx RENAME TO patches_unpartitioned_model_idx")
    op.execute("ALTER INDEX patches_image_idx RENAME TO patches_unpartitioned_image_idx")
    op.execute("ALTER SEQUENCE patches_id_seq OWNED BY NONE")
    op.execute(
        """
        CREATE TABLE patches (
            id bigint NOT NULL DEFAULT nextval('patches_id_seq'),
            model_id bigint NOT NULL REFERENCES models(id) ON DELETE CASCADE,
            image_id bigint NOT NULL REFERENCES images(id) ON DELETE CASCADE,
            grid_row smallint NOT NULL,
            grid_col smallint NOT NULL,
            embedding vector NOT NULL,
            PRIMARY KEY (model_id, id)
        ) PARTITION BY LIST (model_id)
        """
    )
    alter_briefly("ALTER TABLE patches ALTER COLUMN embedding SET STORAGE PLAIN")
    op.execute("CREATE INDEX patches_image_idx ON patches (image_id)")
    op.execute("ALTER SEQUENCE patches_id_seq OWNED BY patches.id")

    indexes = _hnsw_indexes(bind, "patches_unpartitioned")
    model_ids = [row[0] for row in bind.execute(text("SELECT DISTINCT model_id FROM patches_unpartitioned"))]
    for model_id in model_ids:
        op.execute(f"CREATE TABLE patches_model_{model_id} PARTITION OF patches FOR VALUES IN ({model_id})")
        alter_briefly(f"ALTER TABLE patches_model_{model_id} ALTER COLUMN embedding SET STORAGE PLAIN")
        op.execute(
            f"INSERT INTO patches_model_{model_id} ({_COLUMNS}) "
            f"SELECT {_COLUMNS} FROM patches_unpartitioned WHERE model_id = {model_id} ORDER BY id"
        )
    for name, _, _ in indexes:
        op.execute(f'DROP INDEX "{name}"')
    for _, definition, model_id in indexes:
        head, _, _ = definition.partition(" WHERE ")
        op.execute(_moved(head, "patches_unpartitioned", f"patches_model_{model_id}"))
    op.execute("DROP TABLE patches_unpartitioned")


def downgrade() -> None:
    bind = op.get_bind()
    partitions = [
        row[0]
        for row in bind.execute(
            text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'patches'::regclass"
            )
        )
    ]
    indexes = [index for partition in partitions for index in _hnsw_indexes(bind, partition)]
    op.execute("ALTER SEQUENCE patches_id_seq OWNED BY NONE")
    alter_briefly("ALTER TABLE patches RENAME TO patches_partitioned")
    op.execute("ALTER INDEX patches_pkey RENAME TO patches_partitioned_pkey")
    op.execute("ALTER INDEX patches_image_idx RENAME TO patches_partitioned_image_idx")
    op.execute(
        """
        CREATE TABLE patches (
            id bigint PRIMARY KEY DEFAULT nextval('patches_id_seq'),
            model_id bigint NOT NULL REFERENCES models(id) ON DELETE CASCADE,
            image_id bigint NOT NULL REFERENCES images(id) ON DELETE CASCADE,
            grid_row smallint NOT NULL,
            grid_col smallint NOT NULL,
            embedding vector NOT NULL
        )
        """
    )
    alter_briefly("ALTER TABLE patches ALTER COLUMN embedding SET STORAGE PLAIN")
    op.execute("CREATE INDEX patches_model_idx ON patches (model_id)")
    op.execute("CREATE INDEX patches_image_idx ON patches (image_id)")
    op.execute("ALTER SEQUENCE patches_id_seq OWNED BY patches.id")
    op.execute(f"INSERT INTO patches ({_COLUMNS}) SELECT {_COLUMNS} FROM patches_partitioned ORDER BY model_id, id")
    op.execute("DROP TABLE patches_partitioned")
    for _, definition, model_id in indexes:
        op.execute(_moved(definition, f"patches_model_{model_id}", "patches") + f" WHERE (model_id = {model_id})")
