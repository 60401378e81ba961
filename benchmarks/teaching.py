"""The false-positive loop: a category fitted on too few good images flags good parts; adding those parts as normals
(no refit) makes them normal without hurting the other verdicts. Served path (pgvector HNSW + re-rank) throughout.

    python benchmarks/teaching.py --weights ../shared/weights/resnet18-imagenet1k-to-layer3.pth \
        --data ../shared/datasets/mvtec_ad --category bottle --train-images 20 --plot docs/teaching_bottle.png

Fits on the first ``--train-images`` good training images (sorted by name) into the database named by DATABASE_URL
or the embedded one (set INSPECT_DATA_DIR to keep it apart), queries every test image, adds the good test images it
flagged, queries again, and times a full refit with those images for comparison. Prints tables; plots the scores.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from config import get_settings
from patchcore.datasets.mvtec import mvtec_category
from patchcore.images import open_image
from patchcore.metrics import auroc
from patchcore.model import PatchCoreConfig, fit
from patchcore.threshold import DEFAULT_FALSE_ALARM_RATE
from revisions.normals import add_normals
from revisions.uploads import Upload
from serving.inspector import Inspector
from store import banks, models
from store.database import connect, database_url
from store.migrate import upgrade


def _inspect_all(connection, category: str, samples) -> tuple[models.StoredModel, np.ndarray, float]:
    model = models.active_model(connection, category)
    inspector = Inspector(model, banks.load_memory_bank(connection, model.bank_segments, model.dim), get_settings())
    started = time.perf_counter()
    scores = np.array([inspector.inspect([connection], open_image(s.path)).score for s in samples])
    return model, scores, (time.perf_counter() - started) / len(samples)


def _store(connection, category: str, fitted) -> float:
    started = time.perf_counter()
    with connect(database_url(get_settings())) as writer:
        models.save_model(writer, category, fitted, {}, get_settings())
    models.retire_old_models(connection, category, get_settings().fits_kept)
    return time.perf_counter() - started


def _full_size(args, config, train, uploads, paths) -> None:
    """Adding the images to a category fitted on its whole training split, against refitting it with them."""
    name = f"{args.category}_teach_full"
    started = time.perf_counter()
    fitted = fit(config, train, args.weights)
    fit_seconds = time.perf_counter() - started
    with connect(database_url(get_settings()), autocommit=True) as connection:
        store_seconds = _store(connection, name, fitted)
        model = models.active_model(connection, name)
        loaded = time.perf_counter()
        bank = banks.load_memory_bank(connection, model.bank_segments, model.dim)
        inspector = Inspector(model, bank, get_settings())
        load_seconds = time.perf_counter() - loaded
        added = add_normals(connection, model, bank, inspector.embedder, uploads, get_settings(), "benchmark")
        started = time.perf_counter()
        refitted = fit(config, train + paths, args.weights)
        refit_seconds = time.perf_counter() - started
        restore_seconds = _store(connection, f"{name}_refit", refitted)
    print(f"\n| {len(train)} training images, bank {model.memory_bank_size} | seconds |")
    print("|---|---|")
    print(f"| fit + store | {fit_seconds:.1f} + {store_seconds:.1f} |")
    print(f"| add {len(uploads)} normals ({added.patches_added} patches new): embed / select and score / store "
          f"(one transaction) | {added.seconds['embed']:.2f} / {added.seconds['select_and_score']:.2f} / "
          f"{added.seconds['store']:.2f} = {added.seconds['total']:.2f} |")  # fmt: skip
    print(f"| (reading the bank and loading the network first, as a server has them) | {load_seconds:.2f} |")
    print(f"| refit with them + store | {refit_seconds:.1f} + {restore_seconds:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--category", default="bottle")
    parser.add_argument("--train-images", type=int, default=20)
    parser.add_argument("--holdout", type=float, default=0.1)
    parser.add_argument(
        "--false-alarm-rate", type=float, default=DEFAULT_FALSE_ALARM_RATE, help="the fit's target (default 3%%)"
    )
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument(
        "--full-size", action="store_true", help="also time adding the same images to a fit on every training image"
    )
    args = parser.parse_args()

    data = mvtec_category(args.data, args.category)
    train = sorted(data.train)[: args.train_images]
    samples = data.test
    labels = np.array([s.is_anomalous for s in samples])
    config = PatchCoreConfig(backbone="resnet18", holdout_fraction=args.holdout, false_alarm_rate=args.false_alarm_rate)
    name = f"{args.category}_teach"
    url = database_url(get_settings())
    upgrade(url)

    started = time.perf_counter()
    fitted = fit(config, train, args.weights)
    fit_seconds = time.perf_counter() - started
    with connect(url, autocommit=True) as connection:
        store_seconds = _store(connection, name, fitted)
        before_model, before, _ = _inspect_all(connection, name, samples)
        flagged = [i for i, s in enumerate(samples) if not s.is_anomalous and before[i] > before_model.threshold]
        print(f"fit on {len(train)} good images: {fit_seconds:.1f} s + {store_seconds:.1f} s to store; threshold "
              f"{before_model.threshold:.4f}, coreset radius {before_model.coverage_radius:.4f}")  # fmt: skip
        print(f"good test images flagged: {len(flagged)} of {int((~labels).sum())}")
        if not flagged:
            return
        bank = banks.load_memory_bank(connection, before_model.bank_segments, before_model.dim)
        inspector = Inspector(before_model, bank, get_settings())
        uploads = [Upload(samples[i].path.name, samples[i].path.read_bytes(), str(samples[i].path)) for i in flagged]
        added = add_normals(connection, before_model, bank, inspector.embedder, uploads, get_settings(), "benchmark")
        models.retire_old_models(connection, name, get_settings().fits_kept)
        after_model, after, _ = _inspect_all(connection, name, samples)

        started = time.perf_counter()
        refitted = fit(config, train + [samples[i].path for i in flagged], args.weights)
        refit_seconds = time.perf_counter() - started
        restore_seconds = _store(connection, f"{name}_refit", refitted)

    verdict_before, verdict_after = before > before_model.threshold, after > after_model.threshold
    others = np.array([i not in flagged for i in range(len(samples))])
    print("\n| image | score before | score after | threshold | verdict after |")
    print("|---|---|---|---|---|")
    for i in flagged:
        print(f"| good/{samples[i].path.name} | {before[i]:.4f} | {after[i]:.4f} | {after_model.threshold:.4f} | "
              f"{'DEFECT' if verdict_after[i] else 'normal'} |")  # fmt: skip
    changed = others & (verdict_before != verdict_after)
    print("\n| | before | after |")
    print("|---|---|---|")
    print(f"| image AUROC, all {len(samples)} test images | {auroc(before, labels):.4f} | {auroc(after, labels):.4f} |")
    print(f"| image AUROC, the {int(others.sum())} not added | {auroc(before[others], labels[others]):.4f} | "
          f"{auroc(after[others], labels[others]):.4f} |")  # fmt: skip
    for title, verdicts in (("before", verdict_before), ("after", verdict_after)):
        missed = int((labels & ~verdicts).sum())
        false = int((~labels & verdicts).sum())
        print(f"| {title}: defects missed / good flagged | | {missed} / {false} |")
    print(f"| verdicts of the other images that changed | | {int(changed.sum())} |")
    print(
        f"\nadded {len(added.images_added)} image(s): {added.patches_added} of {added.candidate_patches} patches new "
        f"(bank {before_model.memory_bank_size} -> {added.memory_bank_size}); "
        f"{added.seconds['total']:.2f} s (embed {added.seconds['embed']:.2f}, select and score "
        f"{added.seconds['select_and_score']:.2f}, store {added.seconds['store']:.2f}); "
        f"full refit with them: {refit_seconds:.1f} s + {restore_seconds:.1f} s to store"
    )
    if args.full_size:
        _full_size(args, config, data.train, uploads, [samples[i].path for i in flagged])
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for mask, colour, label in ((~labels & others, "tab:green", "good"), (labels, "tab:red", "defect"),
                                    (~others, "tab:blue", "good, added as normals")):  # fmt: skip
            ax.scatter(before[mask], after[mask], s=18, c=colour, label=label)
        ax.axvline(before_model.threshold, color="grey", linestyle="--", linewidth=1)
        ax.axhline(after_model.threshold, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel("score before (threshold dashed)")
        ax.set_ylabel("score after adding the flagged good images")
        ax.set_title(f"{args.category}: fit on {len(train)} images, {len(flagged)} false alarms taught")
        ax.legend()
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=110)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
