"""The one settings object of the service and the ingestion job, read from environment variables (12-factor)."""

from config.settings import Settings, get_settings

__all__ = ["Settings", "get_settings"]
