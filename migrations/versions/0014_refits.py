"""Refits of a category without some of its fit's images: which job a refit was made from and which images it left
out (``fit_jobs.refit_of``, ``fit_jobs.excluded``, file names), so that the job list says why a product was fitted
again and from what (:func:`store.jobs.refit`). NULL and empty for every other job.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01
"""

from migrations.brief_locks import alter_briefly

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    alter_briefly("ALTER TABLE fit_jobs ADD COLUMN refit_of bigint")
    alter_briefly("ALTER TABLE fit_jobs ADD COLUMN excluded text[] NOT NULL DEFAULT '{}'")


def downgrade() -> None:
    alter_briefly("ALTER TABLE fit_jobs DROP COLUMN excluded")
    alter_briefly("ALTER TABLE fit_jobs DROP COLUMN refit_of")
