"""DAGM 2007 as it ships: ``Class<k>/{Train,Test}/<stem>.PNG``, a defective image's mask in its split's
``Label/<stem>_label.PNG``."""

from __future__ import annotations

from pathlib import Path

from patchcore.datasets.category import GOOD, Category, Sample
from patchcore.datasets.files import image_files
from patchcore.datasets.kolektor import KOLEKTOR_MASK, PAIRED_DEFECT

DAGM_SPLITS, DAGM_LABELS = ("Train", "Test"), "Label"  # DAGM 2007: Class<k>/{Train,Test}/<stem>.PNG, and in each
# split's Label/ folder a <stem>_label.PNG mask for every defective image (and Labels.txt, not needed)


def is_dagm(base: Path) -> bool:
    return all((base / split / DAGM_LABELS).is_dir() for split in DAGM_SPLITS)


def _dagm_split(folder: Path) -> tuple[list[Path], dict[Path, Path]]:
    """(the good images, each defective image with its mask) of a DAGM 2007 split: an image is defective where its
    ``Label`` folder holds its ``<stem>_label`` mask (as the set's own readers take it). A mask of no image is named:
    a renamed or missing image would otherwise count as good."""
    masks = {
        path.stem.removesuffix(KOLEKTOR_MASK): path
        for path in image_files(folder / DAGM_LABELS)
        if path.stem.endswith(KOLEKTOR_MASK)
    }
    images = image_files(folder)
    orphans = sorted(set(masks) - {path.stem for path in images})
    if orphans:
        raise FileNotFoundError(
            f"{folder / DAGM_LABELS}: {len(orphans)} masks of no image in {folder}, as {masks[orphans[0]].name}"
        )
    return [path for path in images if path.stem not in masks], {p: masks[p.stem] for p in images if p.stem in masks}


def dagm_category(base: Path, name: str) -> Category:
    """A DAGM 2007 class as it ships (``--data DAGM2007 --category Class1``): the good images of ``Train`` to fit,
    its defective ones left out (and counted, as KolektorSDD2's), and ``Test`` labelled by its masks, one type."""
    train, left_out = _dagm_split(base / DAGM_SPLITS[0])
    good, defective = _dagm_split(base / DAGM_SPLITS[1])
    test = [Sample(path, GOOD, None) for path in good] + [
        Sample(path, PAIRED_DEFECT, mask) for path, mask in defective.items()
    ]
    return Category(name, train, sorted(test, key=lambda sample: sample.path), list(left_out))
