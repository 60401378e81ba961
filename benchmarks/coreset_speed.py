"""Coreset selection time, peak memory and k-center radius, on real bottle features and on random features.

    python benchmarks/coreset_speed.py --data ../shared/datasets/mvtec_ad --weights \
        ../shared/weights/resnet18-imagenet1k-to-layer3.pth

Rows: all 209 bottle training images through ResNet-18 (163,856 x 384), and 300,000 x 1536 Gaussian features
(``--random-rows``), each at ratio 0.1, each in a fresh process: coreset_extra_mib is its peak resident memory minus
its resident memory with the features loaded, the memory the selection itself needs. radius is the k-center radius
in the full feature space (largest distance from a patch to its nearest selected patch), beside a random sample of
the same size. On a GPU (``--device cuda``, the default when there is one) the row also gives the GPU memory peak.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

import torch


def _bottle_features(data: Path, weights: str, device: str) -> torch.Tensor:
    from patchcore.datasets.mvtec import mvtec_category
    from patchcore.model import Embedder, PatchCoreConfig

    embedder = Embedder.load(PatchCoreConfig(backbone="resnet18"), weights, device)
    train = mvtec_category(data, "bottle").train
    return torch.cat([e.features.reshape(-1, 384) for e in embedder.embed_files(train, 16, "features")])


def _rss_mb() -> float:
    """Current resident set size (Linux), in MiB."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def _row(kind: str, features_file: str, ratio: float, device: str, rows: int, queue: multiprocessing.Queue) -> None:
    """One measurement in a fresh process: its peak RSS minus its RSS with the features loaded is the coreset's."""
    from patchcore.coreset import coverage_radius, greedy_coreset

    if kind == "bottle":
        features = torch.load(features_file, weights_only=True)
    else:
        features = torch.empty(rows, 1536)
        features.normal_(generator=torch.Generator().manual_seed(0))
    baseline = _rss_mb()
    started = time.perf_counter()
    selected = greedy_coreset(features, ratio, seed=0, device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row = {
        "features": f"{kind} {features.shape[0]:,} x {features.shape[1]}",
        "device": device,
        "selected": int(selected.numel()),
        "seconds": round(seconds, 1),
        "features_mib": round(features.numel() * 4 / 2**20),
        "rss_loaded_mib": round(baseline),
        "peak_rss_mib": round(peak),
        "coreset_extra_mib": round(peak - baseline),
    }
    if device.startswith("cuda"):
        row["gpu_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
    if kind == "bottle":
        random = torch.randperm(features.shape[0], generator=torch.Generator().manual_seed(0))[: selected.numel()]
        row["radius"] = round(coverage_radius(features, selected), 4)
        row["random_radius"] = round(coverage_radius(features, random), 4)
    queue.put(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="MVTec AD root holding bottle (for the bottle row)")
    parser.add_argument("--weights", help="ResNet-18 weights file (for the bottle row)")
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--skip-random", action="store_true", help="only the bottle row")
    parser.add_argument("--skip-bottle", action="store_true", help="only the random row")
    parser.add_argument("--random-rows", type=int, default=300_000, help="rows of the random 1536-dim features")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    args = parser.parse_args()
    if not args.skip_bottle and not (args.data and args.weights):
        parser.error("the bottle row needs --data and --weights (or pass --skip-bottle)")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:  # the bottle features, passed to each child by file
        features_file = Path(scratch) / "bottle_features.pt"
        if not args.skip_bottle:
            torch.save(_bottle_features(Path(args.data), args.weights, args.device), features_file)
        kinds = ([] if args.skip_bottle else ["bottle"]) + ([] if args.skip_random else ["random"])
        for kind in kinds:
            context = multiprocessing.get_context("spawn")
            queue = context.Queue()
            child = context.Process(
                target=_row, args=(kind, str(features_file), args.ratio, args.device, args.random_rows, queue)
            )
            child.start()
            rows.append(queue.get())
            child.join()
    columns = list(dict.fromkeys(k for row in rows for k in row))
    print(" | ".join(f"{c:>24}" if c == "features" else f"{c:>14}" for c in columns))
    for row in rows:
        print(
            " | ".join(f"{row.get(c, '-')!s:>24}" if c == "features" else f"{row.get(c, '-')!s:>14}" for c in columns)
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
