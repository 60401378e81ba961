"""``python -m ingest add-normals`` and ``add-defects``: teach a fitted category without a refit."""

from __future__ import annotations

import argparse
from pathlib import Path

from config import get_settings
from ingest.stored import active_model
from patchcore import progress
from patchcore.datasets.category import GOOD
from patchcore.datasets.folders import folder_images
from patchcore.datasets.mvtec import mvtec_category
from patchcore.masks import mask_png
from revisions.defects import DefectUpload, add_defects
from revisions.normals import add_normals
from revisions.uploads import Upload
from serving.inspector import Inspector
from store import banks, models
from store.database import connect, database_url
from store.migrate import upgrade


def _files(args: argparse.Namespace) -> list[Path]:
    paths = [p for p in args.files or []]
    if args.folder is not None:
        if not args.folder.is_dir():
            raise FileNotFoundError(f"{args.folder} is not a folder")
        paths += folder_images(args.folder, f"--folder {args.folder}")
    if not paths:
        raise ValueError("no image given: name files, or --folder DIR")
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
    return paths


def _upload(path: Path) -> Upload:
    return Upload(path.name, path.read_bytes(), str(path.resolve()))


def _inspector(connection, category: str) -> Inspector:
    model = active_model(connection, category)
    return Inspector(model, banks.load_memory_bank(connection, model.bank_segments, model.dim), get_settings())


def _teach(category: str, work):
    """``work(connection, inspector)`` on the category's active version (from the database), then the versions it
    replaced are retired."""
    url = database_url(get_settings())
    upgrade(url)
    with connect(url, autocommit=True) as connection:
        result = work(connection, _inspector(connection, category))
        models.retire_old_models(connection, category, get_settings().fits_kept)
    return result


def run_add_normals(args: argparse.Namespace) -> int:
    paths = _files(args)

    def work(connection, inspector):
        with progress.bar(total=len(paths), desc="normals", unit="img") as bar:
            return add_normals(
                connection, inspector.model, inspector.bank, inspector.embedder, [_upload(p) for p in paths],
                get_settings(), args.actor, args.recalibrate, progress=bar.update,
            )  # fmt: skip

    added = _teach(args.category, work)
    if added.model_id == added.previous_model_id:
        print(f"{args.category}: nothing new ({len(added.duplicates)} image(s) already in the memory bank)")
        return 0
    print(
        f"{args.category}: version {added.model_id} (was {added.previous_model_id}): {len(added.images_added)} "
        f"image(s) added, {len(added.duplicates)} already known; {added.patches_added} of {added.candidate_patches} "
        f"patches new, memory bank {added.memory_bank_size}; threshold {added.previous_threshold:.4f} -> "
        f"{added.threshold:.4f}{' (recalibrated)' if added.recalibrated else ''}; {added.seconds['total']:.1f} s"
    )
    for name, score in added.scores.items():
        print(f"  {name}: score {score:.4f} ({'normal' if score <= added.threshold else 'still anomalous'})")
        for note in added.notes.get(name, []):
            print(f"    note: {note}")
    return 0


def _defect_items(args: argparse.Namespace) -> list[DefectUpload]:
    if args.data is not None:
        samples = [s for s in mvtec_category(args.data, args.category, args.real_iad_split).test if s.defect != GOOD]
        if args.defect_type:
            samples = [s for s in samples if s.defect == args.defect_type]
        if not samples:
            raise ValueError(f"{args.data / args.category / 'test'} holds no defect images")
        return [
            DefectUpload(_upload(s.path), s.defect, mask_png(s.mask) if s.mask is not None else None) for s in samples
        ]
    if not args.defect_type:
        raise ValueError("--defect-type is needed with --image")
    mask = args.mask.read_bytes() if args.mask is not None else None
    return [DefectUpload(_upload(args.image), args.defect_type, mask)]


def run_add_defects(args: argparse.Namespace) -> int:
    items = _defect_items(args)

    def work(connection, inspector):
        with progress.bar(total=len(items), desc="defects", unit="img") as bar:
            return add_defects(
                connection, inspector.model, inspector.bank, inspector.embedder, items, get_settings(), args.actor,
                progress=bar.update,
            )  # fmt: skip

    result = _teach(args.category, work)
    types: dict[str, int] = {}
    for item in result["added"]:
        types[item["defect_type"]] = types.get(item["defect_type"], 0) + 1
    print(
        f"{args.category}: version {result['model_id']} (was {result['previous_model_id']}): "
        f"{len(result['added'])} example(s) added ({', '.join(f'{t} {n}' for t, n in sorted(types.items()))}), "
        f"{result['defect_patches']} defect patches, {len(result['skipped'])} already in the library"
    )
    return 0
