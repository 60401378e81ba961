"""Keep embeddings inline in their heap rows, and limit dimensions to what an HNSW index takes.

A 1536-dimensional vector is 6 KB, above PostgreSQL's 2 KB TOAST threshold, so by default it is moved out of line
(and a compression attempt is made on every insert). The served search reads embeddings from the heap twice: the
exact re-rank scans the model's rows, and eq. 7 fetches m*. Out of line, every such row costs a TOAST index lookup
and four chunk reads; inline (STORAGE PLAIN) it is one page. Measured on bottle with 14,740 random-weight 1536-dim
patches: an exact scan took 98-110 ms out of line and 43-55 ms inline, and the insert 3.6 s vs 0.8 s. PLAIN needs the
row to fit a page (8 KB), which holds for every dimension pgvector's HNSW index accepts (2,000), hence the check.

Rows stored before this migration keep their storage until the category is fitted again.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from migrations.brief_locks import alter_briefly

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    alter_briefly("ALTER TABLE patches ALTER COLUMN embedding SET STORAGE PLAIN")
    alter_briefly("ALTER TABLE images ALTER COLUMN embedding SET STORAGE PLAIN")
    alter_briefly("ALTER TABLE models DROP CONSTRAINT models_embedding_dim_check")
    alter_briefly(
        "ALTER TABLE models ADD CONSTRAINT models_embedding_dim_check CHECK (embedding_dim BETWEEN 1 AND 2000)"
    )


def downgrade() -> None:
    alter_briefly("ALTER TABLE models DROP CONSTRAINT models_embedding_dim_check")
    alter_briefly(
        "ALTER TABLE models ADD CONSTRAINT models_embedding_dim_check CHECK (embedding_dim BETWEEN 1 AND 16000)"
    )
    alter_briefly("ALTER TABLE images ALTER COLUMN embedding SET STORAGE EXTENDED")
    alter_briefly("ALTER TABLE patches ALTER COLUMN embedding SET STORAGE EXTENDED")
