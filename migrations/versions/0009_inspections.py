"""The inspection log: every answered query, by which version, with what verdict, how fast, for which key.

``model_id`` is kept without a foreign key: a record outlives the version that made it. The image is a thumbnail,
the upload itself, or nothing (``INSPECT_LOG_IMAGES``); images older than the retention period are deleted by the
service, the records stay.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE inspections (
            id bigserial PRIMARY KEY,
            at timestamptz NOT NULL DEFAULT now(),
            request_id text NOT NULL,
            category text NOT NULL,
            model_id bigint NOT NULL,
            is_anomalous boolean NOT NULL,
            score double precision NOT NULL,
            threshold double precision NOT NULL,
            defect_type text,
            sha256 text NOT NULL,
            bytes integer NOT NULL,
            format text NOT NULL,
            width integer NOT NULL,
            height integer NOT NULL,
            api_key text,
            latency_ms double precision NOT NULL,
            stages_ms jsonb NOT NULL DEFAULT '{}'::jsonb,
            image_kind text NOT NULL CHECK (image_kind IN ('none', 'thumbnail', 'full')),
            image bytea,
            image_media_type text
        )
        """
    )
    op.execute("CREATE INDEX inspections_category_idx ON inspections (category, id DESC)")
    op.execute("CREATE INDEX inspections_at_idx ON inspections (at)")
    op.execute("CREATE INDEX inspections_model_idx ON inspections (model_id)")
    op.execute("CREATE INDEX inspections_images_idx ON inspections (at) WHERE image IS NOT NULL")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS inspections")
