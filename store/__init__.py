"""The store: PostgreSQL with pgvector. Every SQL statement of the product lives in this package."""
