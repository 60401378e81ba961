"""The part each uploaded image of a fit job is one view of, where the job's maker named parts (``PUT
/jobs/{id}/parts``, ``python -m ingest enqueue --part``, the new product page's pattern): the worker then holds out
and cross-fits whole parts, as a fit from files with ``--part`` does. Images of a job without parts, and those added
to a category since its fit, have none: each is a part of its own.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-02
"""

from migrations.brief_locks import alter_briefly

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    alter_briefly("ALTER TABLE fit_job_images ADD COLUMN part text")


def downgrade() -> None:
    alter_briefly("ALTER TABLE fit_job_images DROP COLUMN IF EXISTS part")
