"""What every reader of a set needs: its image files in a stable order, its folder of good images by either name,
its masks by image stem, whether a mask marks a defect, and the paths a split file names checked to lie within the set
and to be there."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np

from patchcore.images import hidden_folder, image_files_in
from patchcore.masks import read_mask

GOOD_FOLDERS = ("good", "ok", "normal")  # MVTec AD and most sets; BTAD; anomalib's folder sets and many a line's own


def image_files(folder: Path) -> list[Path]:
    """Image files of a folder, sorted, so fits are reproducible."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    return image_files_in(folder)


def good_folder(split: Path, named: str | None = None) -> Path | None:
    """The folder of good images in a split (``train``, ``validation`` or the test split): the one ``named`` as the
    training split's (see :func:`sole_folder`), else any of :data:`GOOD_FOLDERS`, in any case (``OK``, ``Normal``); a
    test split's good parts under a name known neither way would be judged as a defect type of that name."""
    if not split.is_dir():
        return None
    folders = {path.name.lower(): path for path in sorted(split.iterdir()) if path.is_dir()}
    names = (named.lower(), *GOOD_FOLDERS) if named else GOOD_FOLDERS
    return next((folders[name] for name in names if name in folders), None)


def good_images_folder(split: Path) -> Path | None:
    """``split`` itself where it holds images and no folder of good ones (a line's own ``train/``: a training
    split is good images only), else None."""
    if not split.is_dir() or good_folder(split) is not None:
        return None
    return split if image_files(split) else None


def sole_folder(split: Path) -> Path | None:
    """A training split's one folder, where it holds no images of its own and a single folder that does (a line's
    own name for its good parts: ``train/defect_free``): a training split is good images only, so that folder is
    them whatever its name, and the test split's folder of the same name its good parts (:func:`good_folder`)."""
    if not split.is_dir() or image_files(split):
        return None
    folders = [path for path in sorted(split.iterdir()) if path.is_dir() and not hidden_folder(path.name)]
    return folders[0] if len(folders) == 1 and image_files(folders[0]) else None


def mask_files(folder: Path) -> dict[str, Path]:
    """The masks of one defect type by image stem: ``<stem>_mask.<ext>`` (MVTec AD, MPDD) or ``<stem>.<ext>`` (VisA as
    anomalib prepares it, BTAD, MVTec 3D-AD), any image format, or a folder ``<stem>/`` of masks to unite (MVTec
    LOCO AD); where one stem has several, ``_mask`` wins, then the plain file."""
    if not folder.is_dir():
        return {}
    found: dict[str, Path] = {p.name: p for p in sorted(folder.iterdir()) if p.is_dir()}
    files = image_files(folder)
    found.update({p.stem: p for p in reversed(files)})
    found.update({p.stem.removesuffix("_mask"): p for p in reversed(files) if p.stem.endswith("_mask")})
    return found


def marks_a_defect(mask: Path) -> bool:
    return bool(np.asarray(read_mask(mask)).any())


def within(named: str, source: Path, root: Path) -> PurePosixPath:
    """A path that a split file names, refused when it would lead outside the set: absolute, or through ``..``."""
    path = PurePosixPath(named)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"{source} names {named!r}, outside {root}: only paths within it are read")
    return path


def refuse_missing(paths: list[Path], source: Path, name: str) -> None:
    """Name the files a split names that are not there, and how many: nothing is left out unsaid."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} files that {source} names for {name} are missing: {missing[0]}")
