"""The AITEX Fabric Image Database as it ships: ``NODefect_images/<roll>/nnnn_000_ff.png`` the good strips of each
fabric, ``Defect_images/nnnn_ddd_ff.png`` the defective ones (``ddd`` the defect's code, ``ff`` the fabric's), and
``Mask_images/nnnn_ddd_ff_mask.png`` their masks (``_mask1``, ``_mask2``... where a strip has several, united).
Every fabric is a product of its own, so each is a category (``fabric_ff``), split by holding good strips out."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from patchcore.datasets.category import Category, Sample, holding_out
from patchcore.datasets.files import image_files

AITEX_GOOD, AITEX_DEFECTS, AITEX_MASKS = "NODefect_images", "Defect_images", "Mask_images"
AITEX_PREFIX = "fabric_"  # a category per fabric code: fabric_00 ... fabric_06
_NAME = re.compile(r"_(\d+)_(\d+)$")  # nnnn_ddd_ff: the image's number, its defect's code, its fabric's code
_MASK = re.compile(r"^(.+)_mask\d*$")  # the mask of <stem>: <stem>_mask, or <stem>_mask1, _mask2... of one strip


def is_aitex(root: Path) -> bool:
    return (root / AITEX_GOOD).is_dir() and (root / AITEX_DEFECTS).is_dir()


def _coded(files: list[Path], folder: Path) -> dict[Path, tuple[str, str]]:
    """(defect code, fabric code) of each file by its name; a name that does not say them is refused by name: its
    fabric, and so its category, cannot be told."""
    codes: dict[Path, tuple[str, str]] = {}
    for path in files:
        found = _NAME.search(path.stem)
        if found is None:
            raise ValueError(
                f"{path}: AITEX names its images nnnn_ddd_ff (number, defect code, fabric code); this one's fabric "
                f"cannot be told from its name ({folder})"
            )
        codes[path] = (found.group(1), found.group(2))
    return codes


def _good(root: Path) -> dict[Path, tuple[str, str]]:
    """The good strips, in the folder of good images or in a folder per roll beneath it, with their codes."""
    folder = root / AITEX_GOOD
    files = sorted(path for roll in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]
                   for path in image_files(roll))  # fmt: skip
    return _coded(files, folder)


def _fabrics(good: dict[Path, tuple[str, str]]) -> list[str]:
    return sorted({AITEX_PREFIX + fabric for _, fabric in good.values()})


def aitex_fabrics(root: Path) -> list[str]:
    """The categories of an AITEX root: one per fabric code its good strips have."""
    return _fabrics(_good(root))


def _masks(root: Path) -> dict[str, tuple[Path, ...]]:
    """Each defective strip's mask files by its stem: one, or several to unite."""
    found: dict[str, list[Path]] = defaultdict(list)
    if (root / AITEX_MASKS).is_dir():
        for path in image_files(root / AITEX_MASKS):
            named = _MASK.match(path.stem)
            if named:
                found[named.group(1)].append(path)
    return {stem: tuple(paths) for stem, paths in found.items()}


def aitex_category(root: Path, name: str) -> Category:
    """One fabric of AITEX (``--data AITEX --category fabric_00``): its good strips to fit, and its defective
    strips to test, each with its mask (a mask file alone, or its several united), the defect type its code
    (``defect_002``); its folder says whether a strip is good, its name only which fabric it is. The set has no test
    split of good strips, so a seeded fifth of them is held out to test (:func:`holding_out`)."""
    fabric = name.removeprefix(AITEX_PREFIX)
    good = _good(root)
    fabrics = _fabrics(good)
    if name not in fabrics:
        raise FileNotFoundError(f"{root} is AITEX; its fabrics (categories) are {', '.join(fabrics)}, not {name}")
    defective = _coded(image_files(root / AITEX_DEFECTS), root / AITEX_DEFECTS)
    masks = _masks(root)
    test = [
        Sample(path, f"defect_{defect}", _one(masks.get(path.stem)))
        for path, (defect, code) in defective.items()
        if code == fabric
    ]
    train = [path for path, (_, code) in good.items() if code == fabric]
    return holding_out(Category(name, train, test))


def _one(paths: tuple[Path, ...] | None) -> Path | tuple[Path, ...] | None:
    """A strip's mask: its file, or its files to unite."""
    return paths[0] if paths and len(paths) == 1 else paths
