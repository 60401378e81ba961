"""python -m ingest: every job on a category outside the API, one subcommand each, listed below with what it
does (`python -m ingest SUBCOMMAND --help` for its options). The list is argparse's own, so it names every one."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from config import get_settings
from config.keys import ROLES, hash_key, new_key, parse_keys
from patchcore import PatchCoreError
from patchcore.backbone import BACKBONES
from patchcore.datasets.realiad import REALIAD_JSONS
from patchcore.scoring import METRICS
from patchcore.threshold import PER_IMAGE, PER_PART
from patchcore.views import FIELDS_OF_VIEW
from revisions.normals import NeedsRefit
from serving.inspector import ModelReplaced
from store.backup import BackupError
from store.jobs import JobStateError, NoStoredImages
from store.standbys import StandbyError
from store.versions import VersionConflict


def _dataset_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--data",
        type=Path,
        help="MVTec AD root: ROOT/<category>/train/good, test/<type>, ground_truth (or as BTAD, AD 2, 3D-AD, LOCO, "
        "VisA, KolektorSDD, KolektorSDD2, DAGM 2007 and the magnetic tiles ship them; Real-IAD: one of its "
        "realiad_<resolution> folders)",
    )
    where.add_argument(
        "--folder", type=Path, help="a plain folder of good images (training only, unless --defects gives a test split)"
    )
    _real_iad_split(parser)
    parser.add_argument(
        "--category",
        action="append",
        default=None,
        help="category to process (repeatable); with --data the default is every category found, "
        "with --folder it names the category (default: the folder's name)",
    )
    _exclude_option(parser)
    _part_option(parser)
    _folder_test_options(parser)


def _exclude_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="NAME",
        help="leave this training image out (repeatable): a file name, or the end of its path; one the fit named "
        "among its good images that score highest and that shows a defect",
    )


def _folder_test_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--defects",
        type=Path,
        help="with --folder: a folder of defective images (or of a folder per defect type) to judge, beside a "
        "seeded 20%% of the good parts held out of the fit",
    )
    parser.add_argument(
        "--masks", type=Path, help="with --defects: their masks, by image stem (or <stem>_mask), or per type folder"
    )


def _part_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--part",
        metavar="REGEX",
        help="name the part each image is a view of by this regular expression on its file name (its first group, "
        "else its match): views of one part (cameras, tiles of one image) are held out and cross-fitted together "
        "and judged per part, as a set that names them (Real-IAD, KolektorSDD); e.g. '^(.+)_\\d+\\.png$'",
    )
    parser.add_argument(
        "--parts",
        type=Path,
        metavar="FILE",
        help="name the part of each image by its file name from FILE instead: the manifest.json of an export (a "
        "product whose job named parts), or a JSON object of file name to part; images it does not name are parts "
        "of their own",
    )


def _per_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--per", choices=(PER_IMAGE, PER_PART), default=PER_IMAGE,
        help="whose false-alarm rate --false-alarm-rate is: each image's (the default), or each part's flagged on any "
        "view (a set whose parts were photographed several times, as Real-IAD or KolektorSDD, or named by --part)",
    )  # fmt: skip


def _real_iad_split(parser: argparse.ArgumentParser) -> None:
    """The protocol option of every command that reads a dataset by --data (Real-IAD ships several splits)."""
    parser.add_argument(
        "--real-iad-split",
        default=REALIAD_JSONS,
        metavar="PROTOCOL",
        help="Real-IAD: the folder of split files beside its image folders that says which images train and test "
        "(default %(default)s, multi-view; realiad_jsons_sv single view; realiad_jsons_fuiad_0.1 ...)",
    )


def _tile_options(parser: argparse.ArgumentParser) -> None:
    """Tiles, for the fit and for a queued job alike: a worker fits a job as ``python -m ingest fit`` would."""
    parser.add_argument(
        "--tile",
        type=int,
        default=0,
        help="whole field of view: compute features in tiles of this many pixels (multiple of 16) when the view is "
        "larger, so large images at a large --pixels fit in memory (default 0: one pass)",
    )
    parser.add_argument("--tile-overlap", type=int, default=32, help="overlap of tiles in pixels (default 32)")


def _care_option(parser: argparse.ArgumentParser) -> None:
    """The care area, for the fit and for a queued job alike."""
    parser.add_argument(
        "--care-area",
        type=Path,
        default=None,
        metavar="MASK",
        help="an image over the pictures, non-black where the part is inspected and black where it is not (a fixture, "
        "a label, the background): patches outside are neither learnt nor scored; one category (default: all of it)",
    )


def _model_options(parser: argparse.ArgumentParser) -> None:
    settings = get_settings()
    parser.add_argument(
        "--backbone",
        choices=sorted(BACKBONES),
        default=settings.backbone,
        help="torchvision backbone (default %(default)s; INSPECT_BACKBONE)",
    )
    parser.add_argument("--layers", default="layer2,layer3", help="layers whose patches are used (default %(default)s)")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument(
        "--weights",
        default=settings.weights,
        help="torchvision state_dict file with at least the used layers (INSPECT_WEIGHTS); "
        "default: download torchvision's ImageNet weights",
    )
    weights.add_argument("--random-weights", action="store_true", help="random weights: shape and speed tests only")
    parser.add_argument(
        "--field-of-view",
        choices=FIELDS_OF_VIEW,
        default="whole",
        help="whole: the whole image, aspect ratio kept, at --pixels; crop: the centre --crop square of the image "
        "resized to --resize on its shorter side (default %(default)s)",
    )
    parser.add_argument(
        "--pixels",
        type=int,
        default=224 * 224,
        help="whole field of view: pixels of the model's view (default 224x224)",
    )
    _tile_options(parser)
    parser.add_argument("--resize", type=int, default=256, help="crop: shorter side after resizing (default 256)")
    parser.add_argument("--crop", type=int, default=224, help="crop: centre crop size (default %(default)s)")
    parser.add_argument(
        "--metric",
        choices=METRICS,
        default=settings.metric,
        help="nearest-neighbour distance (default %(default)s; INSPECT_METRIC)",
    )
    parser.add_argument("--coreset-ratio", type=float, default=0.1, help="memory bank fraction (default %(default)s)")
    parser.add_argument("--neighbors", type=int, default=9, help="b of eq. 7; 1 disables re-weighting (default 9)")
    parser.add_argument(
        "--holdout",
        type=float,
        default=0.1,
        help="fraction of train/good kept out of the memory bank and scored as unseen (0.1)",
    )
    parser.add_argument(
        "--false-alarm-rate",
        type=float,
        default=settings.false_alarm_rate,
        help="threshold at this expected false-alarm rate on good parts, from the good training images scored as "
        "unseen (default %(default)s; INSPECT_FALSE_ALARM_RATE)",
    )
    _per_option(parser)
    parser.add_argument(
        "--calibrate-on-test",
        action="store_true",
        help="set the threshold at the best F1 on the labelled test split instead; its evaluation is then on the "
        "images that set the threshold (optimistic: the report says so and adds a cross-validated F1)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of hold-out split, projection, first centre")
    parser.add_argument(
        "--white-level",
        type=int,
        default=None,
        help="grayscale images of more than 8 bits: the sample value read as white (default: 2**k - 1 for the "
        "fewest bits k that hold the training images' brightest sample, e.g. 4095 for a 12-bit camera)",
    )
    _care_option(parser)
    parser.add_argument("--batch-size", type=int, default=16, help="images per backbone batch (default %(default)s)")
    parser.add_argument("--device", default=settings.device, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--out",
        type=Path,
        default=settings.reports_dir,
        help="reports folder; each category writes OUT/<category>/ (default %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ingest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    fit_cmd = commands.add_parser("fit", help="fit, evaluate and store categories in PostgreSQL")
    _dataset_options(fit_cmd)
    _model_options(fit_cmd)
    fit_cmd.add_argument(
        "--served", action="store_true", help="after storing, also evaluate through the served pgvector path"
    )
    fit_cmd.add_argument(
        "--if-changed",
        action="store_true",
        help="keep each category whose active version comes from a fit of these very good images with these "
        "settings (and what was taught since), rather than fit it again: what run.sh does at every start",
    )

    eval_cmd = commands.add_parser("evaluate", help="fit and evaluate in memory, without the database")
    _dataset_options(eval_cmd)
    _model_options(eval_cmd)

    served = commands.add_parser("evaluate-served", help="served (pgvector HNSW) against exact, on the stored model")
    judged = served.add_mutually_exclusive_group(required=True)
    judged.add_argument("--data", type=Path, help="MVTec AD root holding the test split")
    judged.add_argument(
        "--folder", type=Path, help="the good images the category was fitted from with --defects (its held-out split)"
    )
    served.add_argument("--category", action="append", default=None, help="category (repeatable; default: all stored)")
    _real_iad_split(served)
    _exclude_option(served)
    _part_option(served)
    _folder_test_options(served)
    served.add_argument("--ef-search", type=int, default=None, help="hnsw.ef_search (default INSPECT_HNSW_EF_SEARCH)")
    served.add_argument("--out", type=Path, default=get_settings().reports_dir, help="reports folder")

    threshold = commands.add_parser(
        "threshold", help="set a category's threshold without a refit: a new version, made atomically"
    )
    threshold.add_argument("--category", required=True, help="the fitted category")
    how = threshold.add_mutually_exclusive_group(required=True)
    how.add_argument("--value", type=float, help="this threshold")
    how.add_argument("--false-alarm-rate", type=float, help="the threshold at this expected false-alarm rate")
    how.add_argument(
        "--labelled",
        type=Path,
        help="MVTec AD root whose ROOT/<category>/test split (good and defect folders) sets the best-F1 threshold",
    )
    _real_iad_split(threshold)
    _per_option(threshold)
    threshold.add_argument("--actor", default="cli", help="who makes the change, for the category's log")
    threshold.add_argument(
        "--preview",
        action="store_true",
        help="say what the threshold would be and do (its policy, the stored evaluation judged at it beside the "
        "active version's) and write nothing, as GET /categories/{name}/threshold does",
    )

    normals = commands.add_parser("add-normals", help="add good images without a refit: a new version")
    normals.add_argument("--category", required=True, help="the fitted category")
    normals.add_argument("files", nargs="*", type=Path, help="good image files")
    normals.add_argument("--folder", type=Path, help="a folder of good images")
    normals.add_argument("--recalibrate", action="store_true", help="set the threshold again at its false-alarm rate")
    normals.add_argument("--actor", default="cli", help="who makes the change, for the category's log")

    defects = commands.add_parser("add-defects", help="add labelled defect examples to the category's library")
    defects.add_argument("--category", required=True, help="the fitted category")
    source = defects.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--data", type=Path, help="MVTec AD root: every defect of ROOT/<category>/test, with ground_truth masks"
    )
    source.add_argument("--image", type=Path, help="one defect image")
    defects.add_argument("--defect-type", help="its type (with --data: only this type)")
    _real_iad_split(defects)
    defects.add_argument("--mask", type=Path, help="its mask (PNG, image's size, defect white); default: the model's")
    defects.add_argument("--actor", default="cli", help="who makes the change, for the category's log")

    inspect = commands.add_parser(
        "inspect", help="judge images or folders with a fitted category, without the API: a CSV and heatmap PNGs"
    )
    inspect.add_argument("--category", required=True, help="the fitted category")
    inspect.add_argument("paths", nargs="+", type=Path, help="image files, or folders searched recursively")
    inspect.add_argument(
        "--out", type=Path, default=None, help="where inspections.csv and heatmaps/ go (default REPORTS/inspect/NAME)"
    )
    inspect.add_argument(
        "--part",
        metavar="REGEX",
        help="name the part each image shows by this regular expression on its file name (its first group, else its "
        "match): parts.csv then gives each part's verdict over its views, anomalous when any view is; e.g. "
        "'^(.+)_cam\\d+\\.png$'",
    )
    inspect.add_argument(
        "--parts",
        type=Path,
        metavar="FILE",
        help="name the part of each image by its file name from FILE instead (a JSON object of file name to part, or "
        "an export's manifest.json); images it does not name are parts of their own",
    )

    export = commands.add_parser(
        "export", help="a category's good images out of the database into a folder, to fit from or keep"
    )
    export.add_argument("--category", required=True, help="the fitted category")
    export.add_argument(
        "--out", type=Path, required=True, help="the images go to OUT/<category>/ (new or empty), with manifest.json"
    )

    kept = commands.add_parser(
        "versions", help="the stored versions of a category's kept fits; --activate makes one answer again"
    )
    kept.add_argument("--category", required=True, help="the fitted category")
    kept.add_argument("--activate", type=int, default=None, help="the version to make active again, as it was")
    kept.add_argument(
        "--retire-fit", type=int, default=None, help="retire this earlier kept fit now (its bank, versions, images)"
    )
    kept.add_argument("--actor", default="cli", help="who makes the change, for the category's log")

    delete = commands.add_parser(
        "delete", help="delete a category: its versions, memory banks, stored images and fit jobs (the logs stay)"
    )
    delete.add_argument("--category", required=True, help="the category")
    delete.add_argument("--yes", action="store_true", help="delete; without it, only say what would go")
    delete.add_argument("--actor", default="cli", help="who deletes it, for the category's change log")

    enqueue = commands.add_parser("enqueue", help="queue a fit job from a folder of good images, for a worker")
    enqueue.add_argument("--category", required=True, help="the category to fit (new, or a new version)")
    enqueue.add_argument("--folder", type=Path, required=True, help="a folder of good images")
    settings = get_settings()
    enqueue.add_argument("--backbone", choices=sorted(BACKBONES), default=settings.backbone, help="(%(default)s)")
    enqueue.add_argument("--field-of-view", choices=FIELDS_OF_VIEW, default="whole", help="(%(default)s)")
    enqueue.add_argument("--pixels", type=int, default=224 * 224, help="whole view's pixels (%(default)s)")
    _tile_options(enqueue)
    _care_option(enqueue)
    enqueue.add_argument("--coreset-ratio", type=float, default=0.1, help="memory bank fraction (%(default)s)")
    enqueue.add_argument(
        "--false-alarm-rate", type=float, default=settings.false_alarm_rate, help="threshold's target (%(default)s)"
    )
    _part_option(enqueue)
    _per_option(enqueue)
    enqueue.add_argument("--wait", action="store_true", help="follow the job to its end; exit 1 unless it succeeds")
    enqueue.add_argument("--actor", default="cli", help="who asks, for the job and the category's log")

    worker = commands.add_parser("worker", help="take fit jobs from the database and run them")
    worker.add_argument("--once", action="store_true", help="stop when the queue is empty")
    worker.add_argument(
        "--poll", type=float, default=5.0, help="an idle worker wakes at each queued job, and at least this often (5)"
    )
    worker.add_argument("--name", default=None, help="how jobs name this worker (default: host-pid)")

    key = commands.add_parser("new-key", help="make an API key and the INSPECT_API_KEYS entry that admits it")
    key.add_argument("--name", required=True, help="who or what uses it (a line, a camera, a person)")
    key.add_argument("--role", choices=ROLES, default="inspect", help="inspect (query, read) or admin (also change)")

    dump = commands.add_parser(
        "db-dump", help="the whole store (categories, versions, images, logs, jobs) into one pg_dump archive"
    )
    dump.add_argument("--out", type=Path, required=True, help="the archive to write (a new file)")
    restore = commands.add_parser(
        "db-restore", help="a db-dump archive into the database in use, which must not hold the service yet"
    )
    restore.add_argument("archive", type=Path, help="the archive db-dump wrote")
    commands.add_parser("db-uri", help="print the PostgreSQL URI in use (starts the embedded server if needed)")
    replicas = commands.add_parser(
        "db-replicas",
        help="start N local streaming standbys of the embedded PostgreSQL (pg_basebackup -R when missing, in folders "
        "beside INSPECT_DATA_DIR) and print the DATABASE_REPLICA_URLS that spreads the API's searches over them",
    )
    replicas.add_argument("count", type=int, help="how many standbys (1, 2, ...)")
    commands.add_parser(
        "db-stop", help="stop the embedded PostgreSQL and its local standbys (their data stays beside INSPECT_DATA_DIR)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    try:
        if args.command in ("fit", "evaluate"):
            from ingest.fitting import run_fit

            return run_fit(args, store=args.command == "fit")
        if args.command == "evaluate-served":
            from ingest.served import run_served

            return run_served(args)
        if args.command == "threshold":
            from ingest.threshold import run_threshold

            return run_threshold(args)
        if args.command == "add-normals":
            from ingest.teach import run_add_normals

            return run_add_normals(args)
        if args.command == "add-defects":
            from ingest.teach import run_add_defects

            return run_add_defects(args)
        if args.command == "inspect":
            from ingest.inspect import run_inspect

            return run_inspect(args)
        if args.command == "export":
            from ingest.export import run_export

            return run_export(args)
        if args.command == "versions":
            from ingest.versions import run_versions

            return run_versions(args)
        if args.command == "delete":
            from ingest.delete import run_delete

            return run_delete(args)
        if args.command == "enqueue":
            from ingest.worker import run_enqueue

            return run_enqueue(args)
        if args.command == "worker":
            from ingest.worker import run_worker

            return run_worker(args)
        if args.command == "new-key":
            secret = new_key()
            entry = f"{args.name}:{args.role}:{hash_key(secret)}"
            parse_keys(entry)
            print(f"key (give it to {args.name}; it is not stored anywhere): {secret}")
            print(f"INSPECT_API_KEYS entry (append with a comma to the others): {entry}")
            return 0
        if args.command in ("db-dump", "db-restore"):
            from ingest.backup import run_dump, run_restore

            return run_dump(args) if args.command == "db-dump" else run_restore(args)
        if args.command == "db-uri":
            from store.database import database_url

            print(database_url(settings))
            return 0
        if args.command == "db-replicas":
            from store.database import embedded_standbys

            if args.count < 1:
                raise ValueError(f"count must be 1 or more, got {args.count} (db-stop stops them all)")
            print("DATABASE_REPLICA_URLS=" + ",".join(embedded_standbys(settings, args.count)))
            return 0
    except (
        PatchCoreError,
        FileNotFoundError,
        ValueError,
        StandbyError,
        VersionConflict,
        NeedsRefit,
        NoStoredImages,
        JobStateError,
        BackupError,
        ModelReplaced,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "db-stop":
        from store.database import stop_embedded

        print("stopped" if stop_embedded(settings) else "no embedded server to stop (DATABASE_URL set or none started)")
        return 0
    raise AssertionError(f"unhandled command {args.command}")
