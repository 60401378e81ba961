"""Teaching a fitted category: memory banks made of segments, good images added later, a library of known defects.

A version's memory bank is the union of its ``bank_segments``: partitions of ``patches``, one per version that added
patches (the fit's coreset, then each batch of added normals). Adding normals so copies no row and re-indexes
nothing: it writes and indexes only the new patches, and the search's ``model_id IN (...)`` reads the segments'
HNSW indexes through one Merge Append. ``coverage_radius`` is the fit's coreset radius (the largest distance from a
training patch to its nearest memory-bank patch): a patch within it of the bank is already covered. The defect
library is the same idea: ``defect_patches`` is partitioned by the version that added the examples, and a version
reads the union of its ``defect_segments``.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

from alembic import op

from migrations.brief_locks import alter_briefly
from migrations.views import make_active_models

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP VIEW IF EXISTS active_models")
    alter_briefly("ALTER TABLE models ADD COLUMN bank_segments bigint[]")
    op.execute("UPDATE models SET bank_segments = ARRAY[coalesce(bank_model_id, id)]")
    alter_briefly("ALTER TABLE models ALTER COLUMN bank_segments SET NOT NULL")
    alter_briefly(
        "ALTER TABLE models ADD CONSTRAINT models_bank_segments_check CHECK (cardinality(bank_segments) >= 1)"
    )
    alter_briefly("ALTER TABLE models DROP COLUMN bank_model_id")
    alter_briefly("ALTER TABLE models ADD COLUMN defect_segments bigint[] NOT NULL DEFAULT '{}'")
    alter_briefly("ALTER TABLE models ADD COLUMN coverage_radius double precision")
    alter_briefly("ALTER TABLE images DROP CONSTRAINT images_split_check")
    alter_briefly("ALTER TABLE images ADD CONSTRAINT images_split_check CHECK (split IN ('train', 'holdout', 'added'))")
    alter_briefly("ALTER TABLE images ADD COLUMN source text")
    alter_briefly("ALTER TABLE images ADD COLUMN added_at timestamptz NOT NULL DEFAULT now()")
    op.execute("CREATE INDEX images_sha256_idx ON images (sha256)")
    op.execute(
        """
        CREATE TABLE defect_examples (
            id bigserial PRIMARY KEY,
            model_id bigint NOT NULL REFERENCES models(id) ON DELETE CASCADE,
            defect_type text NOT NULL CHECK (defect_type ~ '^[A-Za-z0-9][A-Za-z0-9_.-]*$'),
            file_name text NOT NULL,
            sha256 text NOT NULL,
            width integer NOT NULL,
            height integer NOT NULL,
            source text,
            cells_from text NOT NULL CHECK (cells_from IN ('mask', 'model')),
            added_at timestamptz NOT NULL DEFAULT now(),
            view_width integer NOT NULL,
            view_height integer NOT NULL,
            view_jpeg bytea NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX defect_examples_model_idx ON defect_examples (model_id)")
    op.execute(
        """
        CREATE TABLE defect_patches (
            id bigserial,
            model_id bigint NOT NULL REFERENCES models(id) ON DELETE CASCADE,
            example_id bigint NOT NULL REFERENCES defect_examples(id) ON DELETE CASCADE,
            grid_row smallint NOT NULL,
            grid_col smallint NOT NULL,
            embedding vector NOT NULL,
            PRIMARY KEY (model_id, id)
        ) PARTITION BY LIST (model_id)
        """
    )
    alter_briefly("ALTER TABLE defect_patches ALTER COLUMN embedding SET STORAGE PLAIN")
    op.execute("CREATE INDEX defect_patches_example_idx ON defect_patches (example_id)")
    make_active_models()


def downgrade() -> None:
    """Versions that added normals cannot be told by a single ``bank_model_id``: each category goes back to the
    version that owns its first segment (added normals and the defect library are lost)."""
    op.execute("DROP VIEW IF EXISTS active_models")
    op.execute("DROP TABLE IF EXISTS defect_patches")
    op.execute("DROP TABLE IF EXISTS defect_examples")
    op.execute(
        "UPDATE categories c SET active_model_id = m.bank_segments[1] FROM models m "
        "WHERE m.id = c.active_model_id AND cardinality(m.bank_segments) > 1"
    )
    op.execute(
        """
        DO $$
        DECLARE owner bigint;
        BEGIN
            FOR owner IN SELECT DISTINCT s FROM models, unnest(bank_segments[2:]) AS s LOOP
                EXECUTE format('DROP TABLE IF EXISTS %I', 'patches_model_' || owner);
            END LOOP;
        END $$
        """
    )
    op.execute(
        "DELETE FROM models WHERE id IN (SELECT unnest(bank_segments[2:]) FROM models) "
        "OR cardinality(bank_segments) > 1"
    )
    alter_briefly("ALTER TABLE models ADD COLUMN bank_model_id bigint REFERENCES models(id) ON DELETE CASCADE")
    op.execute("UPDATE models SET bank_model_id = NULLIF(bank_segments[1], id)")
    op.execute("CREATE INDEX models_bank_idx ON models (bank_model_id)")
    alter_briefly("ALTER TABLE models DROP COLUMN bank_segments")
    alter_briefly("ALTER TABLE models DROP COLUMN defect_segments")
    alter_briefly("ALTER TABLE models DROP COLUMN coverage_radius")
    op.execute("DROP INDEX IF EXISTS images_sha256_idx")
    op.execute("DELETE FROM images WHERE split = 'added'")
    alter_briefly("ALTER TABLE images DROP COLUMN source")
    alter_briefly("ALTER TABLE images DROP COLUMN added_at")
    alter_briefly("ALTER TABLE images DROP CONSTRAINT images_split_check")
    alter_briefly("ALTER TABLE images ADD CONSTRAINT images_split_check CHECK (split IN ('train', 'holdout'))")
    make_active_models()
