"""Copies are one picture: of a category's files with the same bytes one is kept (:func:`distinct`)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from patchcore.datasets.category import Category

HEAD_BYTES = 1 << 16  # what is read of a file first to tell it from another of its size


def _digest(path: Path, head: bool) -> bytes:
    with path.open("rb") as file:
        return hashlib.sha256(file.read(HEAD_BYTES)).digest() if head else hashlib.file_digest(file, "sha256").digest()


def _alike(paths: list[Path]) -> list[list[Path]]:
    """The groups of ``paths`` (two or more each, in their order) that hold the same bytes. Files are told apart by
    their size, then by the digest of their first :data:`HEAD_BYTES`, and only those still alike are read whole: a
    set's images rarely share a size unless stored uncompressed, and then their first rows tell two pictures apart,
    so a set is read once more only where it holds copies."""
    groups = [paths]
    for key in (lambda path: path.stat().st_size, lambda path: _digest(path, True), lambda path: _digest(path, False)):
        alike: list[list[Path]] = []
        for group in groups:
            keyed: dict[object, list[Path]] = {}
            for path in group:
                keyed.setdefault(key(path), []).append(path)
            alike += [same for same in keyed.values() if len(same) > 1]
        groups = alike
    return groups


def distinct(category: Category) -> Category:
    """``category`` with one image of each picture: of files with the same bytes only one is kept, and each other is
    named in ``copies`` with the one kept. Two files of the same bytes are one picture of one part. A training copy
    would be fitted twice, and dealt to another fold its patches cover its twin's look in that fold's bank, so the
    twin's cross-fitted score says nothing of how a new part scores and pulls the threshold down; a test image that is a
    training image is no part the model has never seen, so its verdict would flatter the evaluation. Kept: the first
    (training images first, in their order, then the test split), unless the set marks one of the files defective
    (a test image of a defect type): then that one, and its good twins leave the training images and the good test
    images, as a defect among the good images would (the set's own label is the evidence; learnt as good, it would
    teach the model that defect). The service's own paths already keep one of equal files (a fit job's uploads,
    added normals: by sha256); a fit from files now does too (:func:`_alike` says which files it reads)."""
    defective = {sample.path for sample in category.test if sample.is_anomalous}
    copies: dict[Path, Path] = {}
    for group in _alike(list(dict.fromkeys([*category.train, *(sample.path for sample in category.test)]))):
        kept = next((path for path in group if path in defective), group[0])
        copies.update((path, kept) for path in group if path != kept)
    if not copies:
        return category
    return replace(
        category,
        train=[path for path in category.train if path not in copies],
        test=[sample for sample in category.test if sample.path not in copies],
        parts={path: part for path, part in category.parts.items() if path not in copies},
        copies=copies,
    )
