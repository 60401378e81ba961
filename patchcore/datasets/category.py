"""What a set is read into (:class:`Category`, its test :class:`Sample` s) and the choices a user makes on it
before a fit: images named as not good left out (:func:`excluding`), parts named by a pattern (:func:`parted`), and
good test parts held out where a set ships without a test split (:func:`holding_out`)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from patchcore.masks import MaskSource

GOOD = "good"  # the defect type of every good image, whatever its folder is called
TEST_SHARE = 0.2  # a set without a split (KolektorSDD, MTD, good parts beside rejects): the share held out to test


@dataclass(frozen=True)
class Sample:
    """One labelled test image: its defect type (``good`` for normal) and its ground-truth mask, when the dataset
    has one (a split labelled per image only has none: its pixel metrics are absent, not an error). ``part``: the
    part it is one view of, where a set photographs each part several times (Real-IAD's samples, KolektorSDD's
    folders)."""

    path: Path
    defect: str
    mask: MaskSource | None
    part: str | None = None

    @property
    def is_anomalous(self) -> bool:
        return self.defect != GOOD


@dataclass(frozen=True)
class Category:
    """A product: good training images, and a labelled test split when the dataset has one. ``left_out``: images of
    the training split that are not good (their masks mark a defect), kept out of the fit and said so; ``excluded``:
    training images the user named as not good (:func:`excluding`), kept out the same way. ``parts``: the part a
    training image is one view of, where the set says (as ``Sample.part``): the fit deals its hold-out and folds by
    part (:func:`patchcore.model.fit`). ``copies``: images left out because another image of the category has the
    same bytes (:func:`distinct`), each with the image it copies. ``validation``: the good images of the set's
    validation split, fitted with the training ones (they are good parts the service should learn from, and the
    threshold is set from every good image's score as unseen, so it needs no split of its own). ``unread``: images
    in folders below the set's folders, which its layout does not read (said, not passed over unsaid)."""

    name: str
    train: list[Path]
    test: list[Sample]
    left_out: list[Path] = field(default_factory=list)
    excluded: list[Path] = field(default_factory=list)
    parts: dict[Path, str] = field(default_factory=dict)
    copies: dict[Path, Path] = field(default_factory=dict)
    validation: list[Path] = field(default_factory=list)
    unread: list[Path] = field(default_factory=list)


def excluding(categories: list[Category], names: list[str]) -> list[Category]:
    """``categories`` with the training images ``names`` left out: a defect found among the good images (the fit
    names the good images that score highest) is refitted without, the dataset's folder untouched. A name is a file
    name or the end of a path (``S0001/0003.png``), matched whole from a ``/``. Refused: a name that matches no
    training image (a typo would otherwise fit with the defect still in), or several of one category (say more of
    its path)."""
    if not names:
        return categories
    found: dict[str, int] = dict.fromkeys(names, 0)
    narrowed = []
    for category in categories:
        dropped: set[Path] = set()
        for name in names:
            ending = "/" + name.strip("/")
            hits = [p for p in category.train if ("/" + p.as_posix()).endswith(ending)]
            if len(hits) > 1:
                raise ValueError(
                    f"--exclude {name} names {len(hits)} training images of {category.name} ({hits[0]}, {hits[1]}"
                    f"{', ...' if len(hits) > 2 else ''}); give more of its path"
                )
            found[name] += len(hits)
            dropped.update(hits)
        train = [p for p in category.train if p not in dropped]
        narrowed.append(replace(category, train=train, excluded=[p for p in category.train if p in dropped]))
    missing = [name for name, count in found.items() if count == 0]
    if missing:
        raise ValueError(
            f"--exclude {', '.join(missing)}: no training image of {', '.join(c.name for c in categories)} is named so"
        )
    return narrowed


PartOf = Callable[[Path], str | None]  # the part an image is one view of; None: a part of its own


def parted(categories: list[Category], part_of: PartOf | None) -> list[Category]:
    """``categories`` with the part of every image named by ``part_of`` (:func:`part_namer`, :func:`part_lister`):
    a set of one part photographed several times, from several cameras or cut into tiles, whose files say which part
    they show but whose layout does not (``part0007_cam2.png``: ``--part '^(part\\d+)_'``). The fit then holds out
    and cross-fits whole parts, as it does where a set names them (Real-IAD, KolektorSDD), and the evaluation judges
    parts too; it replaces a set's own names."""
    if part_of is None:
        return categories
    return [
        replace(
            category,
            parts={path: part for path in category.train if (part := part_of(path)) is not None},
            test=[replace(sample, part=part_of(sample.path)) for sample in category.test],
        )
        for category in categories
    ]


def part_lister(listed: dict[str, str]) -> PartOf:
    """The part of an image by its file name in ``listed`` (an export's manifest, ``--parts``); an image it does not
    name is a part of its own, as it was in the fit the list comes from."""
    return lambda path: listed.get(path.name)


def part_namer(pattern: str) -> PartOf:
    """The part of an image by ``pattern``, a regular expression searched in its file name: its first group (or,
    without groups, what it matches). Refused: a pattern that does not compile (at once), and one that an image's
    name does not match or gives an empty part (a part guessed for it would be a silent choice), naming the
    image."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"--part '{pattern}' is not a regular expression: {exc}") from exc

    def part_of(path: Path) -> str:
        found = compiled.search(path.name)
        if found is None or not (part := found.group(1) if compiled.groups else found.group(0)):
            raise ValueError(f"--part '{pattern}' does not match {path.name} ({path.parent}): every image needs a part")
        return part

    return part_of


def holding_out(category: Category, share: float = TEST_SHARE) -> Category:
    """``category`` with a seeded ``share`` of its good training parts (every view of one, :attr:`Category.parts`;
    each image its own where none are named) moved to its test split as good parts, so that its defects are judged
    beside good parts the fit has never seen (a set shipped without a split, as anomalib's folder sets, which hold out
    20% too). At least one part is held out, and at least two stay to fit."""
    part_of = [category.parts.get(path, str(path)) for path in category.train]
    names = list(dict.fromkeys(part_of))
    count = min(max(1, math.ceil(len(names) * share)), len(names) - 2)
    if count < 1:
        raise ValueError(f"{category.name}: {len(names)} good parts are too few to hold one out for the test split")
    held = {names[i] for i in np.random.default_rng(0).permutation(len(names))[:count]}
    moved = [part in held for part in part_of]
    good = [
        Sample(path, GOOD, None, category.parts.get(path))
        for path, out in zip(category.train, moved, strict=True)
        if out
    ]
    train = [path for path, out in zip(category.train, moved, strict=True) if not out]
    kept = set(train)
    parts = {path: part for path, part in category.parts.items() if path in kept}
    return replace(category, train=train, test=good + category.test, parts=parts)
