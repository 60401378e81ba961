"""Every setting, its environment variable and its default; docs/configuration.md mirrors this file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from patchcore.threshold import DEFAULT_FALSE_ALARM_RATE

# The largest memory bank (floats: rows x dimensions) that ``auto`` searches exactly on a CPU: 4 MiB of float32, 2,730
# rows of 384 dimensions. Bottle on 2 cores, /query p50 at 1 and 4 clients, exact against HNSW: 1,474 rows (a 1%
# coreset) 52 against 72-75 ms and 154-156 against 207-224; 4,422 rows 67-68 against 70-74 and 224 against 194-218;
# 7,370 rows 80-81 against 73 and 273-280 against 211-272 (an early build). The exact search in clusters
# (patchcore/clustered.py) beat HNSW on bottle's larger banks but lost on bsdata's 16,395 rows and the screws'
# 14,112 (p50 59-60 against 50-54 ms and 55-59 against 46-52; 4 clients 215-245 against 147-163): the data decide how
# much of a bank its clusters rule out, so above this size the two are timed on each category's first queries
# (serving/search_choice.py, docs/search.md).
EXACT_ON_CPU_FLOATS = 1 << 20


class Settings(BaseSettings):
    """Environment variables are the names below in upper case, prefixed ``INSPECT_`` (``DATABASE_URL`` is not)."""

    model_config = SettingsConfigDict(env_prefix="INSPECT_", env_file=".env", extra="ignore")

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "INSPECT_DATABASE_URL"),
        description="PostgreSQL with pgvector; unset: start (or join) the embedded server in data_dir",
    )
    database_replica_urls: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_REPLICA_URLS", "INSPECT_DATABASE_REPLICA_URLS"),
        description="streaming standbys of DATABASE_URL, comma-separated: the API's HNSW searches and memory-bank "
        "reads go to them (writes and the active version stay on the primary); unset: all on the primary",
    )
    replica_max_lag_seconds: float = Field(
        default=5.0, gt=0, description="a standby further behind the primary than this is taken out of rotation"
    )
    replica_check_seconds: float = Field(
        default=1.0, gt=0, description="how often an API process measures each standby's lag and reachability"
    )
    replica_choice: Literal["least_busy", "round_robin"] = Field(
        default="least_busy", description="how a search picks its standby: fewest searches running, or in turn"
    )
    data_dir: Path = Field(default=Path(".data/pgdata"), description="data folder of the embedded PostgreSQL")
    embedded_shared_buffers: str = Field(
        default="1GB", description="shared_buffers of the embedded PostgreSQL, set when its data folder is created"
    )
    weights: str | None = Field(
        default=None, description="backbone weights file (torchvision state_dict); unset: torchvision's download"
    )
    weights_dir: Path | None = Field(
        default=None, description="where the server looks for a category's weights file by name if its path is gone"
    )
    backbone: str = Field(default="wide_resnet50_2", description="default backbone of the ingest job")

    metric: Literal["cosine", "l2"] = Field(default="l2", description="default nearest-neighbour metric")
    false_alarm_rate: float = Field(
        default=DEFAULT_FALSE_ALARM_RATE,
        gt=0,
        lt=0.5,
        description="default target false-alarm rate on good parts of the ingest job's threshold",
    )
    reports_dir: Path = Field(default=Path("reports"), description="where the ingest job writes reports and plots")
    device: str | None = Field(default=None, description="torch device; unset: cuda when available, else cpu")
    fit_memory_mb: int | None = Field(
        default=None,
        gt=0,
        description="most memory a fit's feature matrix takes before it is mapped from a temporary file in TMPDIR "
        "(the same values, paged by the kernel where memory is short); unset: half the memory available",
    )
    fits_kept: int = Field(
        default=2,
        ge=1,
        description="fits of a category kept stored, each with every version made from it: the active version's and "
        "those in service most recently before it, so that a refit can be undone (PUT "
        "/categories/{name}/active-version) and the kept fit refitted again; each costs its memory bank, images and "
        "job images; 1: a refit retires every earlier fit",
    )
    hnsw_m: int = Field(default=16, description="HNSW graph degree (pgvector m)")
    hnsw_ef_construction: int = Field(default=200, description="HNSW build candidate list (pgvector ef_construction)")
    search_backend: Literal["auto", "database", "exact"] = Field(
        default="auto",
        description="where each patch's nearest memory-bank patch is searched: database (pgvector HNSW, then the "
        "worst patches exactly), exact (every patch exactly in the API process, on its torch device); auto: exact "
        "on an accelerator where the bank's copy fits in its free memory less a quarter of the whole, and, on a CPU, "
        f"for a memory bank of at most {EXACT_ON_CPU_FLOATS:,} floats ("
        f"{EXACT_ON_CPU_FLOATS // 384:,} rows of 384 dimensions, a 1% coreset's); for a larger one on a CPU, "
        "database and exact (in clusters) serve the category's first queries in turn and the faster serves the rest",
    )
    hnsw_ef_search: int = Field(default=4, description="HNSW query candidate list (hnsw.ef_search)")
    batch_wait_ms: float = Field(
        default=0.0,
        ge=0,
        description="how long a request waits for others to be embedded with it in one batch (0: never, the default: "
        "measured no faster on a GPU either, serving/batching.py)",
    )
    batch_max: int = Field(default=32, ge=1, description="most requests embedded in one batch")
    query_batch_files: int = Field(
        default=32,
        ge=1,
        le=64,
        description="most images one POST /query/batch may hold (each counts against the rate limit; the request's "
        "files together stay within INSPECT_MAX_UPLOAD_BYTES)",
    )
    exact_rerank: int = Field(
        default=64,
        description="most patches of a query searched exactly (in the API process, against its copy of the memory "
        "bank) after HNSW, worst-looking first, until no other patch can be worse; then, for an anomalous image, the "
        "cells of each defect region that no exact distance proves yet",
    )
    maintenance_work_mem: str = Field(default="1GB", description="memory for building an HNSW index in memory")
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, description="largest accepted upload, in bytes")
    max_image_pixels: int = Field(default=40_000_000, description="largest accepted image, in pixels")
    pool_size: int | None = Field(
        default=None,
        ge=1,
        description="database connections per API process; unset: the search split plus two, at least 4",
    )
    version_check_seconds: float = Field(
        default=1.0,
        ge=0,
        description="how often an API process asks for its loaded categories' active versions and loads a new one "
        "in the background (a refit by a worker, a threshold or a version made active again on another server), so "
        "that no query waits for the load; 0: the first query after a change loads it",
    )
    max_loaded_categories: int | None = Field(
        default=None,
        ge=1,
        description="most categories an API process keeps loaded (each holds a copy of its memory bank; networks "
        "are shared); past it the least recently asked is unloaded and loaded again when asked; at start, those the "
        "inspection log asked last are loaded first; unset: all",
    )
    search_connections: int | None = Field(
        default=None,
        ge=1,
        description="connections one query's HNSW search is split over, each part on its own database core, when "
        "free; unset: the database server's cores (read by the server from /proc/cpuinfo and its cgroup quota; "
        "when the role may not read server files: this machine's cores for the embedded server, else 2)",
    )
    torch_threads: int | None = Field(
        default=None,
        description="torch intra-op threads of a query alone, shared by concurrent queries; unset: torch's default",
    )
    api_keys: str | None = Field(
        default=None,
        description="API keys as name:role:sha256 entries, comma-separated (role inspect or admin; only each key's "
        "SHA-256 is given: python -m ingest new-key); unset: the service is open to anyone who reaches it",
    )
    rate_limit_per_minute: int | None = Field(
        default=None, ge=1, description="most requests a minute per key (per client address when open), per process"
    )
    log_images: Literal["none", "thumbnail", "full"] = Field(
        default="thumbnail", description="what the inspection log keeps of each image: nothing, a 256 px JPEG, the file"
    )
    log_retention_days: float = Field(
        default=30, gt=0, description="days after which the inspection log's images are deleted (records stay)"
    )
    log_retention_check_seconds: float = Field(
        default=3600, gt=0, description="how often a server deletes the inspection images past their retention"
    )
    log_timeout_ms: int = Field(
        default=5000, ge=10, description="longest wait for an inspection record before INSPECT_LOG_POLICY decides"
    )
    drift_hours: float = Field(
        default=24.0,
        gt=0,
        description="the recent window of a category's drift check: the share of parts flagged in these hours (by "
        "its active version and the versions of its fit whose threshold was set the same way), against the "
        "false-alarm rate their thresholds predict",
    )
    log_policy: Literal["refuse", "wait", "answer"] = Field(
        default="refuse",
        description="when a record cannot be written in time: refuse the answer (503), wait until the database "
        "takes it, or answer without a record (counted in /metrics)",
    )

    @property
    def replica_urls(self) -> list[str]:
        return [url.strip() for url in (self.database_replica_urls or "").split(",") if url.strip()]

    @property
    def fit_memory_bytes(self) -> int | None:
        """``fit_memory_mb`` as :func:`patchcore.model.fit` takes it (``None``: its own default)."""
        return None if self.fit_memory_mb is None else self.fit_memory_mb << 20

    @field_validator("weights", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        """``INSPECT_WEIGHTS=`` (compose passes the variable through, empty when .env leaves it so) means unset."""
        return None if value == "" else value


@lru_cache
def get_settings() -> Settings:
    return Settings()
