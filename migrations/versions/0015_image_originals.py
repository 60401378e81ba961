"""The original file of every good image added to a fitted category (an added normal), as it was sent, so that a
refit takes the images taught since the fit along (:func:`store.jobs.refit`); the fit's own images are the job's
(``fit_job_images``). Gone with the image's version, as its view is. ``fit_jobs.normals`` counts the added normals a
refit carried.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01
"""

from alembic import op

from migrations.brief_locks import alter_briefly

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE image_originals (
            image_id bigint PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
            file_name text NOT NULL,
            data bytea NOT NULL
        )
        """
    )
    alter_briefly("ALTER TABLE fit_jobs ADD COLUMN normals integer NOT NULL DEFAULT 0")


def downgrade() -> None:
    alter_briefly("ALTER TABLE fit_jobs DROP COLUMN normals")
    op.execute("DROP TABLE IF EXISTS image_originals")
