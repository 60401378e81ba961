"""Versions of a category that share a memory bank, the threshold's policy, and a log of every change.

A new threshold must not copy and re-index a memory bank (10 s and 14,740 rows for bottle): a version made without a
refit points at the model that owns its bank (``bank_model_id``; NULL: its own). ``threshold_policy`` says how the
threshold was set (target false-alarm rate, labelled defects, or by hand) and what the good scores say of it.
``category_changes`` keeps who changed what and when; it outlives retired versions.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from alembic import op

from migrations.brief_locks import alter_briefly
from migrations.views import make_active_models

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    alter_briefly("ALTER TABLE models ADD COLUMN bank_model_id bigint REFERENCES models(id) ON DELETE CASCADE")
    op.execute("CREATE INDEX models_bank_idx ON models (bank_model_id)")
    alter_briefly("ALTER TABLE models ADD COLUMN threshold_policy jsonb")
    op.execute(
        "UPDATE models SET threshold_policy = jsonb_build_object('kind', 'sigma_rule', 'sigmas', threshold_sigmas, "
        "'method', 'max(mean + sigmas * std, max) of held-out good scores')"
    )
    alter_briefly("ALTER TABLE models ALTER COLUMN threshold_policy SET NOT NULL")
    alter_briefly("ALTER TABLE models RENAME COLUMN threshold_sigmas TO false_alarm_rate")
    op.execute("UPDATE models SET false_alarm_rate = 0.02")
    alter_briefly("ALTER TABLE models ADD CONSTRAINT models_false_alarm_rate_check CHECK (false_alarm_rate > 0)")
    op.execute(
        """
        CREATE TABLE category_changes (
            id bigserial PRIMARY KEY,
            category_id integer NOT NULL REFERENCES categories(id) ON DELETE CASCADE,
            model_id bigint NOT NULL,
            changed_at timestamptz NOT NULL DEFAULT now(),
            actor text NOT NULL,
            action text NOT NULL,
            detail jsonb NOT NULL DEFAULT '{}'::jsonb
        )
        """
    )
    op.execute("CREATE INDEX category_changes_category_idx ON category_changes (category_id, changed_at DESC)")
    make_active_models()


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS active_models")
    op.execute("DROP TABLE IF EXISTS category_changes")
    op.execute(
        "DELETE FROM models m USING categories c WHERE m.bank_model_id IS NOT NULL AND c.id = m.category_id "
        "AND c.active_model_id IS DISTINCT FROM m.id"
    )
    op.execute(
        "UPDATE categories c SET active_model_id = m.bank_model_id FROM models m "
        "WHERE m.id = c.active_model_id AND m.bank_model_id IS NOT NULL"
    )
    op.execute("DELETE FROM models WHERE bank_model_id IS NOT NULL")
    alter_briefly("ALTER TABLE models DROP CONSTRAINT models_false_alarm_rate_check")
    alter_briefly("ALTER TABLE models RENAME COLUMN false_alarm_rate TO threshold_sigmas")
    op.execute("UPDATE models SET threshold_sigmas = coalesce((threshold_policy->>'sigmas')::float8, 3.0)")
    alter_briefly("ALTER TABLE models DROP COLUMN threshold_policy")
    alter_briefly("ALTER TABLE models DROP COLUMN bank_model_id")
    make_active_models()
