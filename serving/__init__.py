"""Scoring an image through the database: the path shared by ``POST /query`` and ``ingest evaluate-served``."""
