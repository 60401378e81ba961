"""A plain folder of good images, with a folder of rejects and their masks where a factory has them, as every
command reads it; and the checks that refuse masks lying beside their images in such a folder, and good images left
in folders below it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from patchcore.datasets.category import GOOD, Category, PartOf, Sample, excluding, holding_out, parted
from patchcore.datasets.copies import distinct
from patchcore.datasets.files import image_files, mask_files
from patchcore.datasets.kolektor import KOLEKTOR_MASK, PAIRED_MASK
from patchcore.datasets.mvtec import GROUND_TRUTH, unread_below
from patchcore.images import hidden, is_image_file

MASK_SUFFIXES = ("_mask", PAIRED_MASK, KOLEKTOR_MASK)  # how the sets name a mask after its image's stem
FOLDER_ADVICE = (
    "keep the masks in a folder of their own (--masks, for rejects), or give a set that ships so as --data "
    "(KolektorSDD, KolektorSDD2)"
)


def unmixed(what: str, files: list[Path], advice: str = FOLDER_ADVICE) -> list[Path]:
    """``files``, refused where some of them are the masks of images beside them (``<stem>_mask``, ``_GT``,
    ``_label`` beside ``<stem>``): a folder of good images or of rejects (or a fit job's uploads) read as it is would
    take each mask for a part, a black picture with a white blot, fitted as good or judged as a defect. ``what``
    names the files in the refusal, ``advice`` says what to do instead."""
    stems = {(path.parent, path.stem) for path in files}
    found = [
        p
        for p in files
        for end in MASK_SUFFIXES
        if p.stem.endswith(end) and (p.parent, p.stem.removesuffix(end)) in stems
    ]
    if found:
        raise ValueError(
            f"{what}: {len(found)} of its images are the masks of images beside them (as {found[0]}); {advice}"
        )
    return files


def folder_images(folder: Path, what: str, apart: Sequence[Path] = ()) -> list[Path]:
    """The images of a folder given as one (``--folder``), refused where more of them lie in folders below it (a
    day's or a camera's folder each): a command reads the folder itself, and passing those over would fit or teach
    the product without them, unsaid. ``apart``: folders that hold other images by design (rejects or masks given
    within it)."""
    files = image_files(folder)
    kept = [where.resolve() for where in apart]
    below: dict[str, int] = {}
    for path in sorted(folder.rglob("*")):
        inner = path.relative_to(folder).parts
        if len(inner) == 1 or hidden(inner) or not is_image_file(path):
            continue
        if not any(path.parent.resolve().is_relative_to(where) for where in kept):
            below[inner[0]] = below.get(inner[0], 0) + 1
    if below:
        first, count = next(iter(below.items()))
        raise ValueError(
            f"{what}: {sum(below.values())} images lie in {len(below)} folder(s) below it ({first}/: {count}), which a "
            "command does not read: gather the images in one folder, or give each folder as its own"
        )
    return files


def folder_category(folder: Path, name: str, defects: Path | None = None, masks: Path | None = None) -> Category:
    """A plain folder of good images: training only, no evaluation; with ``defects``, a folder of defective images
    (or of a folder of them per defect type), those as a test split, each with its mask by stem from ``masks`` (the
    image's stem, or ``<stem>_mask``; in ``masks/<type>/`` where the types have folders of their own), the good test
    parts still to be held out (:func:`holding_out`). What a factory has at hand: its good parts and its rejects."""
    if defects is None and masks is not None:
        raise ValueError("--masks goes with --defects: the masks of which defective images?")
    apart = [where for where in (defects, masks) if where is not None]
    good = unmixed(f"--folder {folder}", folder_images(folder, f"--folder {folder}", apart))
    if defects is None:
        return Category(name, good, [])
    folders = [sub for sub in sorted(defects.iterdir()) if sub.is_dir() and sub.name != GROUND_TRUTH]
    types = [(defects.name, defects)] + [(sub.name, sub) for sub in folders if masks is None or sub != masks]
    test: list[Sample] = []
    unread: list[Path] = []
    kept = masks.resolve() if masks is not None else None
    for kind, where in types:
        files = unmixed(f"--defects {where}", image_files(where))
        if where != defects:  # a type's folder: the images of folders within it are not read, masks given aside
            unread += [p for p in unread_below(where) if masks is None or not p.parent.resolve().is_relative_to(kept)]
        if kind == GOOD and files:
            raise ValueError(f"{where}: a defect type named {GOOD!r} would read its images as good parts")
        found = {} if masks is None else mask_files(masks / kind if (masks / kind).is_dir() else masks)
        test.extend(Sample(path, kind, found.get(path.stem)) for path in files)
    if not test:
        raise FileNotFoundError(f"--defects {defects}: no image in it nor in a folder of it")
    return Category(name, good, test, unread=unread)


def folder_set(
    folder: Path,
    name: str,
    defects: Path | None = None,
    masks: Path | None = None,
    exclude: Sequence[str] = (),
    part_of: PartOf | None = None,
) -> Category:
    """A plain folder of good images as every command reads it (:func:`folder_category`, less the ``exclude``d
    images, parts by ``part_of``), with its good test parts held out where ``defects`` gives a test split:
    the same split for the fit and for a later evaluation of the stored model, both seeded. Copies (the same
    bytes, :func:`distinct`) are left out before the good test parts are held out."""
    category = distinct(parted(excluding([folder_category(folder, name, defects, masks)], list(exclude)), part_of)[0])
    return holding_out(category) if defects is not None else category
