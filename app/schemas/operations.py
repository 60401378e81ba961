"""Health and readiness."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Health(BaseModel):
    status: str
    auth: str = Field(description="keys (API keys required) or open (no key configured: anyone may do anything)")
    warning: str | None = None


class StandbyState(BaseModel):
    name: str = Field(description="standby-N, N its place in DATABASE_REPLICA_URLS")
    address: str = Field(description="host (or socket folder), port and database; no credentials")
    in_rotation: bool = Field(description="whether searches go to it now")
    why_out: str | None = Field(description="why it is out of rotation (unreachable, lagging, ...)")
    lag_seconds: float | None = Field(description="how long ago the primary wrote the oldest WAL it has not replayed")
    answered: int = Field(description="searches and memory-bank reads it answered (this process)")
    skipped: dict[str, int] = Field(description="searches it did not answer, by reason: behind, failed, busy")


class Ready(BaseModel):
    status: str = Field(
        description="ready (200); loading (503): the server answers, but loads its categories since it started, "
        "each one not loaded yet by its first query; not_ready (503): no fitted category, or no database"
    )
    database: bool
    categories: list[str] = Field(
        description="the categories with an active version (the loaded ones while the database is down)"
    )
    loaded: list[str] = Field(
        default_factory=list,
        description="those this server holds in memory: they answer without reading their memory bank first",
    )
    loading: list[str] = Field(
        default_factory=list, description="those this server loads since it started and holds not yet"
    )
    standbys: list[StandbyState] = Field(default_factory=list, description="empty without DATABASE_REPLICA_URLS")
