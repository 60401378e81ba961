"""What each segment of added normals costs a query, searched by HNSW in PostgreSQL or exactly in the API process.

    INSPECT_DATA_DIR=/tmp/bench/pg python benchmarks/segments_cost.py --category bottle \
        --normals ../shared/datasets/mvtec_ad/bottle/test/good --queries ../shared/datasets/mvtec_ad/bottle/test \
        --at 1 2 5 11 21

CHANGES THE CATEGORY: it adds the --normals images one per version (each a segment when it adds a patch), so run it
on a scratch fit. At each segment count it times the served search to the score (median over the query images,
3 passes each) with every segment searched by HNSW, and with the added rows searched exactly (the default up to
``EXACT_ADDED_ROWS``), alternating, and checks that both give the same scores.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import serving.inspector as served
from config import Settings
from patchcore.images import open_image
from patchcore.model import Embedder
from revisions.normals import add_normals
from revisions.uploads import Upload
from store import banks, models
from store.database import connect, database_url, search_split


def _timed(inspector: served.Inspector, connections, features: list) -> tuple[float, list[float]]:
    times, scores = [], []
    for _ in range(3):
        for each in features:
            started = time.perf_counter()
            scores.append(inspector.inspect_features(connections, each).score)
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--category", required=True)
    parser.add_argument("--normals", type=Path, required=True, help="good images to add, one per version")
    parser.add_argument("--queries", type=Path, required=True, help="images searched (recursively); 10 are used")
    parser.add_argument("--at", type=int, nargs="+", default=[1, 2, 5, 11, 21], help="segment counts measured")
    args = parser.parse_args()
    settings = Settings(search_backend="database")  # what it measures: segments in the SQL search
    url = database_url(settings)
    first = connect(url, autocommit=True)
    connections = [first, *(connect(url, autocommit=True) for _ in range(search_split(settings, first) - 1))]
    queries = sorted(p for p in args.queries.rglob("*.png") if args.normals not in p.parents)[::8][:10]
    normals = iter(sorted(args.normals.glob("*.png")))
    print(f"{'segments':>8} | {'added rows':>10} | {'all by HNSW ms':>14} | {'added exactly ms':>16} | same scores")
    while True:
        model = models.active_model(connections[0], args.category)
        bank = banks.load_memory_bank(connections[0], model.bank_segments, model.dim)
        if len(model.bank_segments) in args.at:
            served.EXACT_ADDED_ROWS = 0
            hnsw = served.Inspector(model, bank, settings)
            served.EXACT_ADDED_ROWS = 1024
            exact = served.Inspector(model, bank, settings)
            features = [exact.embed(open_image(q)) for q in queries]
            (a, scores_a), (b, scores_b), (c, _), (d, _) = (_timed(i, connections, features)
                                                            for i in (hnsw, exact, hnsw, exact))  # fmt: skip
            same = max(abs(x - y) for x, y in zip(scores_a, scores_b, strict=True)) < 1e-5
            added = 0 if exact.added_rows is None else exact.added_rows.size
            print(f"{len(model.bank_segments):>8} | {added:>10} | {a:>6.1f}, {c:>6.1f} | {b:>7.1f}, {d:>7.1f} | {same}")
        if len(model.bank_segments) >= max(args.at):
            return
        path = next(normals, None)
        if path is None:
            print("out of normals to add")
            return
        with connect(url, autocommit=True) as connection:
            embedder = Embedder(model.config, served.shared_extractor(model, settings, settings.device))
            add_normals(connection, model, bank, embedder, [Upload(path.name, path.read_bytes(), str(path))], settings,
                        "benchmark")  # fmt: skip
            models.retire_old_models(connection, args.category, settings.fits_kept)


if __name__ == "__main__":
    main()
