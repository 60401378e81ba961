"""``python -m ingest export``: a category's good images out of the database into a folder, as the files they were
sent as, with a manifest, and the command that fits the same settings from that folder (:mod:`store.exports`)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from config import get_settings
from ingest.stored import active_model
from patchcore import progress
from patchcore.backbone import RANDOM_WEIGHTS
from patchcore.model import PatchCoreConfig
from patchcore.threshold import PER_IMAGE
from store import exports
from store.database import connect, database_url
from store.migrate import upgrade

# PatchCoreConfig's field -> python -m ingest fit's option, for what a refit from the folder must be told
_OPTIONS = {
    "layers": "--layers", "field_of_view": "--field-of-view", "resize": "--resize", "crop": "--crop",
    "pixels": "--pixels", "tile": "--tile", "tile_overlap": "--tile-overlap", "coreset_ratio": "--coreset-ratio",
    "num_neighbors": "--neighbors", "holdout_fraction": "--holdout", "seed": "--seed",
}  # fmt: skip


def fit_command(
    config: PatchCoreConfig,
    weights: str | None,
    folder: Path,
    category: str,
    parts: bool,
    per: str = PER_IMAGE,
    care: Path | None = None,
) -> str:
    """The ``python -m ingest fit`` line that fits ``category`` from ``folder`` with ``config``: the network, its
    weights, the metric and the false-alarm rate always (their defaults are the environment's), every other setting
    where it is not the default, the parts its images show where the manifest names them (``parts``), a target
    per part (``per``) and the care area's mask written at ``care``."""
    words = ["python", "-m", "ingest", "fit", "--folder", str(folder), "--category", category]
    if care is not None:
        words += ["--care-area", str(care)]
    if parts:
        words += ["--parts", str(folder / exports.MANIFEST)]
    if per != PER_IMAGE:
        words += ["--per", per]
    words += ["--backbone", config.backbone, "--metric", config.metric]
    words += ["--false-alarm-rate", str(config.false_alarm_rate)]
    if weights == RANDOM_WEIGHTS:
        words.append("--random-weights")
    elif weights is not None:
        words += ["--weights", weights]
    default = PatchCoreConfig()
    for field, option in _OPTIONS.items():
        value = getattr(config, field)
        if value != getattr(default, field):
            words += [option, ",".join(value) if field == "layers" else str(value)]
    if config.white_level is not None:
        words += ["--white-level", str(config.white_level)]
    return shlex.join(words)


def run_export(args: argparse.Namespace) -> int:
    folder = args.out / args.category
    care = args.out / f"{args.category}.care-area.png"  # beside the folder: a fit from it reads every picture in it
    if folder.exists() and any(folder.iterdir()):
        raise ValueError(f"{folder} is not empty: export into a new folder (nothing there is overwritten)")
    if care.exists():
        raise ValueError(f"{care} exists: export into a new folder (nothing there is overwritten)")
    url = database_url(get_settings())
    upgrade(url)
    with connect(url, autocommit=True) as connection:
        model = active_model(connection, args.category)
        folder.mkdir(parents=True, exist_ok=True)
        with progress.bar(desc="export", unit="img") as bar:

            def put(name: str, data: bytes) -> None:
                with (folder / name).open("xb") as file:  # x: a name taken twice would fail, not overwrite
                    file.write(data)
                bar.update(name != exports.MANIFEST)

            manifest = exports.export(connection, model, put)
    files, not_kept = manifest["files"], manifest["not_kept"]
    size = sum(f["bytes"] for f in files) / 2**20
    print(f"{args.category}: {len(files)} good images of version {model.id} ({size:.1f} MiB) and {exports.MANIFEST} "
          f"in {folder}")  # fmt: skip
    if not_kept:
        names = ", ".join(n["file"] for n in not_kept[:5]) + (", ..." if len(not_kept) > 5 else "")
        print(f"not in the database, so not exported: {len(not_kept)} ({names}); {exports.MANIFEST} says why")
    parts = {f["part"] for f in files if "part" in f}
    if parts:
        views = sum("part" in f for f in files)
        print(f"{views} of them are views of {len(parts)} parts ({exports.MANIFEST} names each file's part)")
    per = model.threshold_policy.get("per", PER_IMAGE)
    if model.config.care is None:
        care = None
    else:
        care.write_bytes(model.config.care.png())
        print(f"its care area: {care} ({model.config.care.share:.1%} of each picture)")
    command = fit_command(model.config, model.weights, folder, args.category, bool(parts), per, care)
    print(f"fit from them: {command}")
    return 0
