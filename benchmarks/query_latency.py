"""Latency of POST /query over HTTP against a running server: sequential and concurrent clients.

    python benchmarks/query_latency.py --url http://127.0.0.1:8000 --images ../shared/datasets/mvtec_ad/bottle/test \
        --category bottle --concurrency 1 4

Prints p50/p95/p99 latency, requests per second, and where the time goes (the server's own timings_ms).
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np


def run(url: str, images: list[Path], category: str, clients: int, heatmap: bool) -> dict:
    payloads = [(p.name, p.read_bytes()) for p in images]
    with httpx.Client(base_url=url, timeout=120, limits=httpx.Limits(max_connections=clients)) as client:
        client.post("/query", files={"file": payloads[0]}, data={"category": category})  # warm-up

        def one(payload: tuple[str, bytes]) -> tuple[float, dict]:
            started = time.perf_counter()
            response = client.post(
                "/query", files={"file": payload}, data={"category": category, "heatmap": str(heatmap).lower()}
            )
            response.raise_for_status()
            return (time.perf_counter() - started) * 1000, response.json()["timings_ms"]

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=clients) as pool:
            results = list(pool.map(one, payloads))
        wall = time.perf_counter() - started
    latencies = np.array([r[0] for r in results])
    stages = {
        k: statistics.median(r[1].get(k, 0.0) for r in results)
        for k in ("decode", "embed", "search", "rerank", "score", "log")
    }
    return {
        "clients": clients,
        "requests": len(results),
        "p50": float(np.percentile(latencies, 50)),
        "p95": float(np.percentile(latencies, 95)),
        "p99": float(np.percentile(latencies, 99)),
        "rps": len(results) / wall,
        **{f"{k}_p50": v for k, v in stages.items()},
        "other_p50": float(np.percentile(latencies, 50)) - sum(stages.values()),
        # the known-defect search runs for anomalous images of a category with a library only
        "defects_n": sum("defects" in r[1] for r in results),
        "defects_p50": statistics.median([r[1]["defects"] for r in results if "defects" in r[1]] or [0.0]),
    }


def print_table(rows: list[dict], width: int) -> None:
    """Rows of measurements as a text table, floats to one decimal."""
    columns = list(rows[0])
    print(" | ".join(f"{c:>{width}}" for c in columns))
    for row in rows:
        cells = (f"{row[c]:>{width}.1f}" if isinstance(row[c], float) else f"{row[c]:>{width}}" for c in columns)
        print(" | ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--images", type=Path, required=True, help="folder searched recursively for PNG/JPEG files")
    parser.add_argument("--category", required=True)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--heatmap", action="store_true", help="ask for the heatmap PNG too")
    args = parser.parse_args()
    images = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    rows = [run(args.url, images, args.category, n, args.heatmap) for n in args.concurrency]
    print_table(rows, 10)
    print("p50/p95/p99 in ms end to end over HTTP; *_p50 are the server's own median stage timings (ms);")
    print("other_p50 = HTTP, upload, JSON and queueing: p50 minus the stages (the known-defect search, defects_p50")
    print("over the defects_n answers that ran it, included).")


if __name__ == "__main__":
    main()
