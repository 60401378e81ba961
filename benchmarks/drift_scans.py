"""The drift report's two scans over a long inspection log: what ``/metrics`` runs for every loaded category at each
scrape, and ``GET /categories/{name}/drift`` once.

Starts a PostgreSQL of its own (the embedded build, in ``--folder``), writes ``--days`` days of one version's answers
by SQL as a line would leave them (one a second, three views a part, 3% flagged, every 50th reviewed, each with a
thumbnail of about 8 KB as the default log keeps it), and times ``store.inspections.hourly`` and ``hourly_parts`` over
the default 24-hour window (median of ``--repeats``), with the sizes of the table and of its indexes.

    python benchmarks/drift_scans.py --days 8
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

import log_reads
import psycopg
from log_soak import own_database

from store import inspections


def write_log(url: str, days: int) -> float:
    """``days`` days of version 1's answers, the newest a second ago, every 50th reviewed; its seconds."""
    started = time.perf_counter()
    log_reads.write_log(url, days * 86400, flagged_every=33, thumbnails=True)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(
            "UPDATE inspections SET review_label = 'good', reviewed_at = now(), reviewed_by = 'bench' WHERE id % 50 = 0"
        )
        connection.execute("VACUUM ANALYZE inspections")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--folder", type=Path, help="database folder (default: a temporary one, removed after)")
    args = parser.parse_args()

    folder, server, url = own_database(args.folder, "drift-scans-")
    try:
        with psycopg.connect(url) as connection:
            written = connection.execute("SELECT count(*) FROM inspections").fetchone()[0]
        how = f"written by SQL in {write_log(url, args.days):.1f} s" if written == 0 else "kept from an earlier run"
        timings = {}
        with psycopg.connect(url, autocommit=True) as connection:
            scans = {
                "hourly (answers and reviews per hour)": lambda: inspections.hourly(connection, 1, 24, [1]),
                "hourly_parts (parts per hour)": lambda: inspections.hourly_parts(connection, 1, 24),
            }
            for name, scan in scans.items():
                scan()  # warm-up: the window's pages in shared buffers, as at every scrape after the first
                spent = []
                for _ in range(args.repeats):
                    started = time.perf_counter()
                    scan()
                    spent.append((time.perf_counter() - started) * 1000)
                timings[name] = statistics.median(spent)
            total, window = connection.execute(
                "SELECT count(*), count(*) FILTER (WHERE at >= now() - interval '24 hours') FROM inspections"
            ).fetchone()
            sizes = connection.execute(
                "SELECT indexrelname, pg_relation_size(indexrelid) FROM pg_stat_user_indexes "
                "WHERE relname = 'inspections' ORDER BY indexrelname"
            ).fetchall()
            table = connection.execute("SELECT pg_relation_size('inspections')").fetchone()[0]
    finally:
        server.stop()
        if args.folder is None:
            shutil.rmtree(folder.parent, ignore_errors=True)
    print(f"{total:,} records ({window:,} in the 24-hour window), {how}")
    print(f"{'scan':<40} | {'p50 ms':>8}")
    for name, median in timings.items():
        print(f"{name:<40} | {median:8.1f}")
    print(f"{'both: one category of a scrape':<40} | {sum(timings.values()):8.1f}")
    print(f"table {table / 2**20:.0f} MiB; indexes: " + ", ".join(f"{n} {s / 2**20:.0f} MiB" for n, s in sizes))


if __name__ == "__main__":
    main()
