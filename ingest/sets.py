"""The categories a command judges, read the same way by each: those of a dataset given by ``--data`` (the named
ones, or every one found), or one plain ``--folder`` of good images, with a test split where ``--defects`` gives its
rejects (:func:`patchcore.datasets.folders.folder_set`: the same seeded split for a fit and a later served evaluation);
either way less the images whose bytes another of its images has (:func:`patchcore.datasets.copies.distinct`)."""

from __future__ import annotations

import argparse

from patchcore.datasets.category import Category, excluding, parted
from patchcore.datasets.copies import distinct
from patchcore.datasets.folders import folder_set
from patchcore.datasets.mvtec import mvtec_categories, mvtec_category, not_found


def categories(args: argparse.Namespace) -> list[Category]:
    if args.folder is not None:
        names = args.category or [args.folder.name]
        if len(names) != 1:
            raise ValueError("--folder takes exactly one --category")
        return [folder_set(args.folder, names[0], args.defects, args.masks, args.exclude, args.part)]
    if args.defects is not None or args.masks is not None:
        raise ValueError("--defects and --masks go with --folder: a dataset given by --data has its own test split")
    split = args.real_iad_split
    names = args.category or mvtec_categories(args.data, split)
    if not names:
        raise FileNotFoundError(f"no category under {args.data}: {not_found(args.data, split)}")
    read = parted(excluding([mvtec_category(args.data, name, split) for name in names], args.exclude), args.part)
    return [distinct(category) for category in read]
