"""What ``hnsw.ef_search`` buys: HNSW patch distances against exact ones, and the time of the search, per value.

    python benchmarks/hnsw_ef_search.py --category bottle --images ../shared/datasets/mvtec_ad/bottle/test \
        --ef-search 1 2 4 10 20

Runs against the stored category in the database of ``DATABASE_URL`` (or the embedded one): each test image is
embedded once, searched exactly in this process, then by the served HNSW statement on ONE connection at each
``ef_search``. HNSW returns a real memory-bank patch, so each distance is exact or too large; the re-rank
(:mod:`patchcore.rerank`) makes the image score exact whatever ``ef_search`` is, and what a lower value costs is
the anomaly map's patches that stay too large, and more patches re-ranked. Prints one row per ``ef_search``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from app.services import Services
from config import Settings
from patchcore.images import IMAGE_SUFFIXES, open_image


def measure(services: Services, category: str, images: list[Path], values: list[int]) -> list[dict]:
    inspector = services.inspector(category)
    features = [inspector.embed(open_image(path)) for path in images]
    exact = [inspector.exact.nearest_one(f.reshape(-1, f.shape[-1]).float())[0].numpy() for f in features]
    rows = []
    for ef in values:
        times, missed, largest = [], [], []
        with services.pool.connection() as connection:
            for f, truth in zip(features, exact, strict=True):
                started = time.perf_counter()
                found = inspector.search([connection], f, 10, ef).distances
                times.append((time.perf_counter() - started) * 1000)
                missed.append(float(np.mean(found > truth + 1e-4)))
                largest.append(float(np.max(found - truth)))
        rows.append(
            {
                "ef_search": ef,
                "search_ms_p50": statistics.median(times),
                "patches_not_exact_pct": 100 * float(np.mean(missed)),
                "largest_excess": max(largest),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--category", required=True)
    parser.add_argument("--images", type=Path, required=True, help="a folder of test images (searched recursively)")
    parser.add_argument("--ef-search", type=int, nargs="+", default=[1, 2, 4, 10, 20])
    args = parser.parse_args()
    images = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    services = Services(Settings())
    services.pool.open()
    try:
        rows = measure(services, args.category, images, args.ef_search)
    finally:
        services.pool.close()
    print(f"{args.category}: {len(images)} images, one connection")
    print(f"{'ef_search':>10} | {'search ms p50':>13} | {'patches not exact %':>19} | {'largest excess':>14}")
    for row in rows:
        print(
            f"{row['ef_search']:>10} | {row['search_ms_p50']:>13.1f} | {row['patches_not_exact_pct']:>19.2f} | "
            f"{row['largest_excess']:>14.3f}"
        )


if __name__ == "__main__":
    main()
