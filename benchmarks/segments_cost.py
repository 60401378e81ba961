"""What each segment of added normals costs a query, searched by HNSW in PostgreSQL or exactly in the API process.

    INSPECT_DATA_DIR=/tmp/bench/pg python benchmarks/segments_cost.py --category bottle \
        --normals ../shared/datasets/mvtec_ad/bottle/test/good --queries ../shared/datasets/mvtec_ad/bottle/test \
        --at 1 2 5 11 21

CHANGES THE CATEGORY: it adds the --normals images one per version (each a segment when it adds a patch), so run it
on a scratch fit (any pictures serve as --normals for the cost: defective ones add more rows a segment). At each
segment count it times the served search to the score (median over the query images, 3 passes each) with every
segment searched by HNSW, and as served (an added segment of at most ``EXACT_SEGMENT_ROWS`` rows searched exactly in
the API process), alternating, and checks that both give the same scores.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

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
    parser.add_argument("--normals", type=Path, required=True, help="images to add (recursively), one per version")
    parser.add_argument("--queries", type=Path, required=True, help="images searched (recursively); 10 are used")
    parser.add_argument("--at", type=int, nargs="+", default=[1, 2, 5, 11, 21], help="segment counts measured")
    args = parser.parse_args()
    settings = Settings(search_backend="database")  # what it measures: segments in the SQL search
    url = database_url(settings)
    first = connect(url, autocommit=True)
    connections = [first, *(connect(url, autocommit=True) for _ in range(search_split(settings, first) - 1))]
    queries = sorted(p for p in args.queries.rglob("*.png") if args.normals not in p.parents)[::8][:10]
    normals = iter(sorted(args.normals.rglob("*.png")))
    heads = ("segments", "added rows", "largest added", "all by HNSW ms", "as served ms", "same scores")
    print(" | ".join(heads))
    while True:
        model = models.active_model(connections[0], args.category)
        bank = banks.load_memory_bank(connections[0], model.bank_segments, model.dim)
        if len(model.bank_segments) in args.at:
            rule, served.EXACT_SEGMENT_ROWS = served.EXACT_SEGMENT_ROWS, 0
            hnsw = served.Inspector(model, bank, settings)
            served.EXACT_SEGMENT_ROWS = rule
            exact = served.Inspector(model, bank, settings)
            features = [exact.embed(open_image(q)) for q in queries]
            (a, scores_a), (b, scores_b), (c, _), (d, _) = (_timed(i, connections, features)
                                                            for i in (hnsw, exact, hnsw, exact))  # fmt: skip
            same = max(abs(x - y) for x, y in zip(scores_a, scores_b, strict=True)) < 1e-5
            sizes = np.unique(bank.owners[bank.owners != model.bank_segments[0]], return_counts=True)[1]
            added, largest = int(sizes.sum()), int(sizes.max(initial=0))
            cells = (len(model.bank_segments), added, largest, f"{a:.1f}, {c:.1f}", f"{b:.1f}, {d:.1f}", same)
            print(" | ".join(f"{cell!s:>{len(head)}}" for cell, head in zip(cells, heads, strict=True)))
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
