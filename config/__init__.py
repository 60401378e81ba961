"""The one settings object of the service and the ingestion job, read from environment variables (12-factor)."""

from config.settings import EXACT_ON_CPU_FLOATS, Settings, get_settings

__all__ = ["EXACT_ON_CPU_FLOATS", "Settings", "get_settings"]
