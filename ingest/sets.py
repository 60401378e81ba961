"""The categories a command judges, read the same way by each: those of a dataset given by ``--data`` (the named
ones, or every one found), or one plain ``--folder`` of good images, with a test split where ``--defects`` gives its
rejects (:func:`patchcore.datasets.folders.folder_set`: the same seeded split for a fit and a later served evaluation);
either way less the images whose bytes another of its images has (:func:`patchcore.datasets.copies.distinct`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from patchcore.datasets.category import Category, PartOf, excluding, part_lister, part_namer, parted
from patchcore.datasets.copies import distinct
from patchcore.datasets.folders import folder_set
from patchcore.datasets.mvtec import mvtec_categories, mvtec_category, not_found


def categories(args: argparse.Namespace) -> list[Category]:
    part_of = part_naming(args)
    if args.folder is not None:
        names = args.category or [args.folder.name]
        if len(names) != 1:
            raise ValueError("--folder takes exactly one --category")
        return _named([folder_set(args.folder, names[0], args.defects, args.masks, args.exclude, part_of)], args)
    if args.defects is not None or args.masks is not None:
        raise ValueError("--defects and --masks go with --folder: a dataset given by --data has its own test split")
    split = args.real_iad_split
    names = args.category or mvtec_categories(args.data, split)
    if not names:
        raise FileNotFoundError(f"no category under {args.data}: {not_found(args.data, split)}")
    read = parted(excluding([mvtec_category(args.data, name, split) for name in names], args.exclude), part_of)
    return _named([distinct(category) for category in read], args)


def part_naming(args: argparse.Namespace) -> PartOf | None:
    """How the images' parts are named: by a pattern (``--part``), by a list (``--parts``), or as the set names them."""
    if args.part is not None and args.parts is not None:
        raise ValueError("--part and --parts both name the images' parts: give one of them")
    if args.part is not None:
        return part_namer(args.part)
    return part_lister(listed_parts(args.parts)) if args.parts is not None else None


def listed_parts(path: Path) -> dict[str, str]:
    """The part of each image by file name from ``path``: an export's ``manifest.json`` (its files' ``part``, where
    the job named parts), or a JSON object of file name to part."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        listed = {f["file"]: f["part"] for f in data["files"] if "part" in f} if "files" in data else dict(data)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(
            f"--parts {path}: not a manifest.json of an export nor a JSON object of file name to part ({exc})"
        ) from exc
    if not listed or not all(isinstance(v, str) and v for v in listed.values()):
        raise ValueError(f"--parts {path} names no part, or a part that is not a name")
    return listed


def _named(read: list[Category], args: argparse.Namespace) -> list[Category]:
    """``read``, refused where ``--parts`` names none of its images (a list of another set's files)."""
    if args.parts is not None and not any(category.parts for category in read):
        raise ValueError(f"--parts {args.parts} names none of the training images of {', '.join(c.name for c in read)}")
    return read
