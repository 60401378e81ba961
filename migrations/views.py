"""The view ``active_models`` (each category's active version with its name), made again by every migration that
adds or drops a column of ``models``: PostgreSQL expands ``m.*`` when a view is made, so a view made before a column
was added would not show it, and a column cannot be dropped while a view shows it."""

from alembic import op


def make_active_models() -> None:
    op.execute("DROP VIEW IF EXISTS active_models")
    op.execute(
        "CREATE VIEW active_models AS SELECT c.name AS category, m.* "
        "FROM categories c JOIN models m ON m.id = c.active_model_id"
    )
