"""Latency of POST /query over HTTP against a running server: sequential and concurrent clients.

    python benchmarks/query_latency.py --url http://127.0.0.1:8000 --images ../shared/datasets/mvtec_ad/bottle/test \
        --category bottle --concurrency 1 4 [--batch 1 8]

Prints p50/p95/p99 latency, requests and images per second, and where the time goes (the server's own timings_ms).
``--batch N`` above 1 sends N images a request to POST /query/batch instead (latency per request).
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np


def run(url: str, images: list[Path], category: str, clients: int, heatmap: bool, batch: int = 1) -> dict:
    payloads = [(p.name, p.read_bytes()) for p in images]
    requests = [payloads[start : start + batch] for start in range(0, len(payloads), batch)]
    route = "/query" if batch == 1 else "/query/batch"
    form = {"category": category, "heatmap": str(heatmap).lower()}
    with httpx.Client(base_url=url, timeout=120, limits=httpx.Limits(max_connections=clients)) as client:
        client.post("/query", files={"file": payloads[0]}, data={"category": category})  # warm-up

        def one(group: list[tuple[str, bytes]]) -> tuple[float, list[dict], dict]:
            started = time.perf_counter()
            response = client.post(route, files=[("file", payload) for payload in group], data=form)
            response.raise_for_status()
            answers = [response.json()] if batch == 1 else response.json()["answers"]
            whole = {} if batch == 1 else response.json()["timings_ms"]
            return (time.perf_counter() - started) * 1000, [answer["timings_ms"] for answer in answers], whole

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=clients) as pool:
            measured = list(pool.map(one, requests))
        wall = time.perf_counter() - started
    results = [(latency, timings) for latency, answers, _ in measured for timings in answers]
    latencies = np.array([latency for latency, _, _ in measured])
    stages = {
        k: statistics.median(r[1].get(k, 0.0) for r in results)
        for k in ("decode", "embed", "search", "rerank", "score", "log")
    }
    return {
        "clients": clients,
        "batch": batch,
        "requests": len(measured),
        "p50": float(np.percentile(latencies, 50)),
        "p95": float(np.percentile(latencies, 95)),
        "p99": float(np.percentile(latencies, 99)),
        "rps": len(measured) / wall,
        "images_s": len(results) / wall,
        **{f"{k}_p50": v for k, v in stages.items()},
        "other_p50": statistics.median(latency - _stages(answers, whole) for latency, answers, whole in measured),
        # the known-defect search runs for anomalous images of a category with a library only
        "defects_n": sum("defects" in r[1] for r in results),
        "defects_p50": statistics.median([r[1]["defects"] for r in results if "defects" in r[1]] or [0.0]),
    }


def _stages(answers: list[dict], whole: dict) -> float:
    """The server's stage timings of one request: each image's own, and once what a batch's images share: the
    embedding, the log write, the search where they were searched together (each answer then gives the batch's, the
    same figure), and its decoding (side by side: the batch's own timing, ``whole``)."""
    together = len(answers) > 1 and len({t.get("search") for t in answers}) == 1
    shared = ("embed", "log", "search") if together else ("embed", "log")
    own = sum(t.get(k, 0.0) for t in answers for k in ("search", "rerank", "score", "defects") if k not in shared)
    decode = whole.get("decode", sum(t.get("decode", 0.0) for t in answers))
    return own + decode + sum(answers[0].get(k, 0.0) for k in shared)


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
    parser.add_argument(
        "--batch", type=int, nargs="+", default=[1], help="images a request (above 1: POST /query/batch)"
    )
    args = parser.parse_args()
    images = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    rows = [run(args.url, images, args.category, n, args.heatmap, b) for b in args.batch for n in args.concurrency]
    print_table(rows, 10)
    print("p50/p95/p99 in ms end to end over HTTP, per request; *_p50 are the server's own median stage timings (ms),")
    print("per image (in a batch, embed is the whole batch's, and search where its images were searched together);")
    print("other_p50 = HTTP, upload, JSON and queueing: the median of each request's latency minus its stages (the")
    print("known-defect search, defects_p50 over the defects_n answers that ran it, included).")


if __name__ == "__main__":
    main()
