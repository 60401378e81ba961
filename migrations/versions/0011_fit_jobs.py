"""Fit jobs: a category fitted from uploaded good images by a worker process on any machine that reaches the
database, not by the API process.

``fit_jobs`` is the queue and each job's visible state; workers take a job with ``SELECT ... FOR UPDATE SKIP
LOCKED`` and hold a session advisory lock on it while they work, so that a worker whose connection is gone (killed,
its machine lost) is told apart from a slow one without a timeout (:mod:`store.jobs`). ``fit_job_images`` holds the
uploaded images until the job ends, so that a worker elsewhere reads them from the database, not from a shared
disk.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE fit_jobs (
            id bigserial PRIMARY KEY,
            category text NOT NULL CHECK (category ~ '^[A-Za-z0-9][A-Za-z0-9_.-]*$' AND length(category) <= 100),
            options jsonb NOT NULL DEFAULT '{}'::jsonb,
            state text NOT NULL DEFAULT 'draft'
                CHECK (state IN ('draft', 'queued', 'running', 'succeeded', 'failed', 'cancelled')),
            created_at timestamptz NOT NULL DEFAULT now(),
            created_by text,
            queued_at timestamptz,
            started_at timestamptz,
            finished_at timestamptz,
            worker text,
            attempts integer NOT NULL DEFAULT 0,
            stage text,
            stage_number integer,
            stages integer,
            done bigint,
            total bigint,
            unit text,
            rate double precision,
            progress_at timestamptz,
            cancel_requested boolean NOT NULL DEFAULT false,
            message text,
            model_id bigint
        )
        """
    )
    op.execute("CREATE INDEX fit_jobs_queued_idx ON fit_jobs (id) WHERE state = 'queued'")
    op.execute("CREATE INDEX fit_jobs_category_idx ON fit_jobs (category, id DESC)")
    op.execute(
        """
        CREATE TABLE fit_job_images (
            id bigserial PRIMARY KEY,
            job_id bigint NOT NULL REFERENCES fit_jobs (id) ON DELETE CASCADE,
            file_name text NOT NULL,
            sha256 text NOT NULL,
            data bytea NOT NULL,
            UNIQUE (job_id, file_name),
            UNIQUE (job_id, sha256)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS fit_job_images")
    op.execute("DROP TABLE IF EXISTS fit_jobs")
