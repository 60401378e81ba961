"""Reading a large inspection log over HTTP: a part's verdict, a part's records, lists of parts, and the whole log
as CSV.

Starts a PostgreSQL of its own (the embedded build, in ``--folder``), writes ``--rows`` records by SQL as a line
would leave them (three views a part, one category, 1% flagged, one a second; no image kept), serves the API with
one uvicorn process at the default settings, and times ``GET /parts/{part}`` and ``GET /inspections?part=`` for
random parts (p50, p95 over ``--asks``), ``GET /parts`` for the last hour's rejected parts, for the newest parts of
the category and of all, for the rejected parts of the whole log (its first page and the next) and for the newest
and the rejected parts of the last week, and ``GET /inspections.csv`` of the whole category (seconds, rows and MB per
second, and the API's resident memory before and at its peak while streaming: the file is never held).

    python benchmarks/log_reads.py --rows 1000000
"""

from __future__ import annotations

import argparse
import random
import shutil
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psycopg
from log_soak import own_database, resident_mb, start_api


def write_log(url: str, rows: int, flagged_every: int = 100, thumbnails: bool = False, versions: int = 1) -> float:
    """``rows`` records of category ``line`` up to now, part ``SN-<i // 3>``, every ``flagged_every``-th flagged,
    answered in turn by ``versions`` versions (ids 1, 2, ...), one a second each, by one INSERT; its seconds.
    ``thumbnails``: each keeps about 8 KB of incompressible bytes, as the default log keeps a JPEG thumbnail (stored
    out of the row), and its stage timings, as a served answer's record does."""
    kept = (
        '\'{"decode": 16.3, "embed": 21.0, "search": 24.2, "score": 3.0}\'::jsonb, \'thumbnail\', '
        "convert_to(thumbnail.hex, 'UTF8'), 'image/jpeg'"
        if thumbnails
        else "'{}'::jsonb, 'none', NULL, NULL"
    )
    drawn = (
        "CROSS JOIN LATERAL (SELECT string_agg(md5(random()::text || j || i), '') AS hex "
        "FROM generate_series(1, 250) AS j) AS thumbnail"
        if thumbnails
        else ""
    )
    started = time.perf_counter()
    with psycopg.connect(url) as connection:
        connection.execute(
            "INSERT INTO inspections (request_id, category, model_id, is_anomalous, score, threshold, sha256, bytes, "
            "format, width, height, latency_ms, stages_ms, image_kind, image, image_media_type, part, file_name, "
            "regions, at) "
            "SELECT 'r' || i, 'line', 1 + i %% %s, i %% %s = 0, 1.0 + (i %% 100) / 100.0, 1.9, md5(i::text), "
            f"250000, 'PNG', 900, 900, 80.0, {kept}, 'SN-' || (i / 3), 'cam' || (i %% 3) || '.png', '[]'::jsonb, "
            f"now() - make_interval(secs => (%s - i)::float8 / %s) FROM generate_series(1, %s) AS i {drawn}",
            (versions, flagged_every, rows, versions, rows),
        )
        connection.execute("ANALYZE inspections")
    return time.perf_counter() - started


def timed(client: httpx.Client, paths: list[str]) -> np.ndarray:
    spent = []
    for path in paths:
        started = time.perf_counter()
        client.get(path).raise_for_status()
        spent.append((time.perf_counter() - started) * 1000)
    return np.array(spent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--asks", type=int, default=200, help="random parts asked for (default 200)")
    parser.add_argument("--folder", type=Path, help="database folder (default: a temporary one, removed after)")
    args = parser.parse_args()

    folder, server, url = own_database(args.folder, "log-reads-")
    wrote = write_log(url, args.rows)
    api, base = start_api(url, folder.parent / "api.log", port=8766, ready="/health")  # no category is fitted
    try:
        rng = random.Random(0)
        parts = [f"SN-{rng.randrange(args.rows // 3)}" for _ in range(args.asks)]
        with httpx.Client(base_url=base, timeout=600) as client:
            client.get("/parts/SN-1").raise_for_status()  # warm-up
            verdicts = timed(client, [f"/parts/{p}" for p in parts])
            listed = timed(client, [f"/inspections?part={p}" for p in parts])
            hour = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
            rejects = timed(client, [f"/parts?category=line&verdict=defect&since={hour}"] * 20)
            newest = timed(client, ["/parts?category=line"] * 20)
            everywhere = timed(client, ["/parts"] * 20)
            ever = timed(client, ["/parts?verdict=defect"] * 20)
            after = client.get("/parts", params={"verdict": "defect"}).json()["next_before"]
            further = timed(client, [f"/parts?verdict=defect&before={after}"] * 20)
            week = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 7 * 86400))
            weekly = timed(client, [f"/parts?since={week}"] * 20)
            week_rejects = timed(client, [f"/parts?verdict=defect&since={week}"] * 20)
            before = resident_mb(api.pid)
            peak = [before]
            streaming = threading.Event()

            def sample() -> None:
                while not streaming.is_set():
                    peak.append(resident_mb(api.pid))
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample)
            sampler.start()
            started = time.perf_counter()
            received = lines = 0
            with client.stream("GET", "/inspections.csv", params={"category": "line"}) as response:
                response.raise_for_status()
                for chunk in response.iter_bytes():
                    received += len(chunk)
                    lines += chunk.count(b"\n")
            seconds = time.perf_counter() - started
            streaming.set()
            sampler.join()
    finally:
        api.terminate()
        api.wait(30)
        server.stop()
        if args.folder is None:  # a million records: 1.6 GB
            shutil.rmtree(folder.parent, ignore_errors=True)
    print(f"{args.rows:,} records written by SQL in {wrote:.1f} s; {args.asks} random parts asked")
    print(f"{'request':<38} | {'p50 ms':>8} | {'p95 ms':>8}")
    for name, spent in (
        ("GET /parts/{part}", verdicts), ("GET /inspections?part=", listed),
        ("GET /parts, the last hour's rejects", rejects), ("GET /parts, the category's newest 50", newest),
        ("GET /parts, the newest 50 of all", everywhere), ("GET /parts, every reject: first 50", ever),
        ("GET /parts, every reject: next 50", further), ("GET /parts, the week's newest 50", weekly),
        ("GET /parts, the week's rejects: 50", week_rejects),
    ):  # fmt: skip
        print(f"{name:<38} | {np.percentile(spent, 50):8.1f} | {np.percentile(spent, 95):8.1f}")
    rows = lines - 1
    print(
        f"GET /inspections.csv: {rows:,} rows, {received / 2**20:.1f} MiB in {seconds:.1f} s "
        f"({rows / seconds:,.0f} rows/s, {received / 2**20 / seconds:.1f} MiB/s); API resident {before:.0f} MiB "
        f"before, {max(peak):.0f} MiB at most while streaming"
    )
    if rows != args.rows:
        raise SystemExit(f"the CSV held {rows} rows, not {args.rows}")


if __name__ == "__main__":
    main()
