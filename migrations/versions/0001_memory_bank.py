"""Memory bank schema: categories, fitted models, their good images and coreset patches.

Embeddings are untyped ``vector`` columns so categories may differ in dimension; each fitted model gets partial HNSW
indexes on ``(embedding::vector(D))`` restricted to its own rows (created by the store when it loads the model).

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from alembic import op

from migrations.brief_locks import alter_briefly

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.execute(
        """
        CREATE TABLE categories (
            id serial PRIMARY KEY,
            name text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]*$'),
            active_model_id bigint,
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE models (
            id bigserial PRIMARY KEY,
            category_id integer NOT NULL REFERENCES categories(id) ON DELETE CASCADE,
            backbone text NOT NULL,
            layers text[] NOT NULL,
            resize integer NOT NULL,
            crop integer NOT NULL,
            metric text NOT NULL CHECK (metric IN ('cosine', 'l2')),
            coreset_ratio double precision NOT NULL,
            num_neighbors integer NOT NULL,
            holdout_fraction double precision NOT NULL,
            threshold_sigmas double precision NOT NULL,
            seed integer NOT NULL,
            embedding_dim integer NOT NULL CHECK (embedding_dim BETWEEN 1 AND 16000),
            grid_height integer NOT NULL,
            grid_width integer NOT NULL,
            weights text,
            weights_sha256 text,
            threshold double precision NOT NULL,
            memory_bank_size integer NOT NULL,
            evaluation jsonb NOT NULL DEFAULT '{}'::jsonb,
            timings jsonb NOT NULL DEFAULT '{}'::jsonb,
            fitted_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX models_category_idx ON models (category_id)")
    alter_briefly(
        "ALTER TABLE categories ADD CONSTRAINT categories_active_model_fk "
        "FOREIGN KEY (active_model_id) REFERENCES models(id) ON DELETE SET NULL"
    )
    op.execute(
        """
        CREATE TABLE images (
            id bigserial PRIMARY KEY,
            model_id bigint NOT NULL REFERENCES models(id) ON DELETE CASCADE,
            split text NOT NULL CHECK (split IN ('train', 'holdout')),
            label text NOT NULL,
            file_name text NOT NULL,
            sha256 text NOT NULL,
            width integer NOT NULL,
            height integer NOT NULL,
            calibration_score double precision,
            embedding vector NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX images_model_idx ON images (model_id)")
    op.execute(
        """
        CREATE TABLE patches (
            id bigserial PRIMARY KEY,
            model_id bigint NOT NULL REFERENCES models(id) ON DELETE CASCADE,
            image_id bigint NOT NULL REFERENCES images(id) ON DELETE CASCADE,
            grid_row smallint NOT NULL,
            grid_col smallint NOT NULL,
            embedding vector NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX patches_model_idx ON patches (model_id)")
    op.execute("CREATE INDEX patches_image_idx ON patches (image_id)")
    op.execute(
        """
        CREATE VIEW active_models AS
        SELECT c.name AS category, m.*
        FROM categories c JOIN models m ON m.id = c.active_model_id
        """
    )


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS active_models")
    op.execute("DROP TABLE IF EXISTS patches, images CASCADE")
    alter_briefly("ALTER TABLE categories DROP CONSTRAINT IF EXISTS categories_active_model_fk")
    op.execute("DROP TABLE IF EXISTS models, categories CASCADE")
