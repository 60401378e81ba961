"""The drift report's two scans over a long inspection log: what ``/metrics`` runs for every loaded category at each
scrape, and ``GET /categories/{name}/drift`` once.

Starts a PostgreSQL of its own (the embedded build, in ``--folder``), writes ``--days`` days of the answers of
``--versions`` active versions (products) by SQL as a line would leave them (one a second each, interleaved, three
views a part, 3% flagged, every 50th reviewed, each with a thumbnail of about 8 KB as the default log keeps it), and
times ``store.inspections.hourly`` and ``hourly_parts`` of the first over the default 24-hour window (median of
``--repeats``), with what a scrape of them all then costs (that many times the first's), ``recent_scores`` (which
only the drift page and its report read), and the sizes of the table and of its indexes. With several versions the
three views of a part are answered by three of them, so each version's window holds as many parts as answers.

    python benchmarks/drift_scans.py --days 8
    python benchmarks/drift_scans.py --days 1 --versions 10
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


def write_log(url: str, days: int, versions: int) -> float:
    """``days`` days of the answers of ``versions`` versions, the newest a moment ago, every 50th reviewed; its
    seconds."""
    started = time.perf_counter()
    log_reads.write_log(url, days * 86400 * versions, flagged_every=33, thumbnails=True, versions=versions)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(
            "UPDATE inspections SET review_label = 'good', reviewed_at = now(), reviewed_by = 'bench' WHERE id % 50 = 0"
        )
        connection.execute("VACUUM ANALYZE inspections")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--versions", type=int, default=1, help="products answering on the line (default 1)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--folder", type=Path, help="database folder (default: a temporary one, removed after)")
    args = parser.parse_args()

    folder, server, url = own_database(args.folder, "drift-scans-")
    try:
        with psycopg.connect(url) as connection:
            written = connection.execute("SELECT count(*) FROM inspections").fetchone()[0]
        how = "kept from an earlier run"
        if written == 0:
            how = f"written by SQL in {write_log(url, args.days, args.versions):.1f} s"
        timings = {}
        with psycopg.connect(url, autocommit=True) as connection:
            scans = {
                "hourly (answers and reviews per hour)": lambda: inspections.hourly(connection, [1], 24),
                "hourly_parts (parts per hour)": lambda: inspections.hourly_parts(connection, [1], 24),
            }
            plot = {"recent_scores (the drift page's plot)": lambda: inspections.recent_scores(connection, [1], 24)}
            for name, scan in {**scans, **plot}.items():
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
    print(f"{total:,} records of {args.versions} version(s) ({window:,} in the 24-hour window), {how}")
    print(f"{'scan':<40} | {'p50 ms':>8}")
    for name, median in timings.items():
        print(f"{name:<40} | {median:8.1f}")
    both = sum(timings[name] for name in scans)
    print(f"{'both: one category of a scrape':<40} | {both:8.1f}")
    if args.versions > 1:
        print(f"{f'a scrape of all {args.versions} (about)':<40} | {both * args.versions:8.1f}")
    print(f"table {table / 2**20:.0f} MiB; indexes: " + ", ".join(f"{n} {s / 2**20:.0f} MiB" for n, s in sizes))


if __name__ == "__main__":
    main()
