"""Files uploaded to a fit job, as named images: zip archives expanded, names made plain, every image decoded once
with the checks of ``/query`` (formats, pixel budget, the shape its field of view takes), so a job never queues a
file its worker cannot read."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import PurePosixPath

from PIL import Image

from patchcore.errors import ImageError, together
from patchcore.images import IMAGE_SUFFIXES, hidden, open_image

MAX_MEMBERS = 20_000
FOLDER_JOIN = "__"  # a zip member's folders below the archive's own, kept in its name: p7/cam1.png -> p7__cam1.png
NAME_BYTES = 255  # the longest file name most file systems take (the worker writes each image as a file)


class ArchiveError(ValueError):
    """A zip archive that cannot be expanded safely (corrupt, too large expanded, too many members)."""


def _plain_name(name: str, data: bytes, fallback: str) -> str:
    """The file name without folders; an image suffix the fit recognises (the format's, when the name has none)."""
    plain = PurePosixPath(name.replace("\\", "/")).name.strip() or fallback
    if PurePosixPath(plain).suffix.lower() in IMAGE_SUFFIXES:
        return plain
    with Image.open(io.BytesIO(data)) as image:
        return f"{plain}.{(image.format or 'png').lower()}"


def _expand(name: str, data: bytes, member_limit: int, budget: int) -> tuple[list[tuple[str, str, bytes]], list[str]]:
    """(images as (where it came from, plain name, bytes), members ignored as not images). An image's name keeps the
    folders it lies in below those every image of the archive shares, joined by :data:`FOLDER_JOIN`: a station's
    views often share file names across folders (``p7/cam1.png``, ``p8/cam1.png``, or ``cam1/0007.png``,
    ``cam2/0007.png``), which the folder name alone tells apart, and names the part a pattern can find
    (``^(.+?)__``); a zip of one folder (``good/000.png``) keeps the files' own names."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [m for m in archive.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(f"{name} is not a readable zip archive: {exc}") from exc
    if len(members) > MAX_MEMBERS:
        raise ArchiveError(f"{name} holds {len(members)} files; at most {MAX_MEMBERS} per archive")
    images, ignored, kept = [], [], []
    for member in members:
        path = PurePosixPath(member.filename.replace("\\", "/"))
        if path.suffix.lower() not in IMAGE_SUFFIXES or hidden(path.parts):  # as a folder of images is read
            ignored.append(f"{name}: {member.filename}")
            continue
        kept.append((member, path))
    shared = _shared_folders([path.parent.parts for _, path in kept])
    for member, path in kept:
        if member.file_size > member_limit:
            raise ArchiveError(f"{name}: {member.filename} is {member.file_size} bytes; the limit is {member_limit}")
        budget -= member.file_size
        if budget < 0:
            raise ArchiveError(f"{name} expands to more than this upload may hold; send it in parts")
        with archive.open(member) as stream:
            images.append((f"{name}: {member.filename}", _joined(path.parts[shared:]), stream.read(member_limit + 1)))
    return images, ignored


def _joined(parts: tuple[str, ...]) -> str:
    """A member's folders and name as one file name, its outermost folders left out where it would be too long."""
    parts = tuple(part for part in parts if part not in ("", ".", ".."))
    while len(parts) > 1 and len(FOLDER_JOIN.join(parts).encode()) > NAME_BYTES:
        parts = parts[1:]
    return FOLDER_JOIN.join(parts)


def _shared_folders(folders: list[tuple[str, ...]]) -> int:
    """How many leading folders every one of ``folders`` shares (the archive's own folder, where it has one)."""
    shared = 0
    for level in zip(*folders, strict=False):  # as deep as the shallowest goes
        if len(set(level)) > 1:
            break
        shared += 1
    return shared


def _smallest(width: int, height: int) -> tuple[int, int]:
    """A check, not the model's input: a JPEG is decoded at libjpeg's smallest scale (1/8), which still decodes every
    byte, so a truncated file is refused alike (a 3600x3600 JPEG: 10.1 ms against 55.8 ms in full)."""
    return 1, 1


def job_images(
    files: list[tuple[str, bytes]],
    max_pixels: int,
    member_limit: int,
    expanded_limit: int,
    accept: Callable[[int, int], object] | None = None,
) -> tuple[list[tuple[str, bytes]], list[str]]:
    """(images as (name, bytes), ignored members of archives). A ``.zip`` file is expanded (its images kept, other
    members listed as ignored; at most ``expanded_limit`` bytes expanded in all); every other file must be an image,
    of a shape ``accept(width, height)`` takes (the job's field of view: :meth:`patchcore.views.Preprocess.view`).
    Raises :class:`ImageError` naming every file that is not a readable image, or is one of a shape the fit would
    refuse (:func:`patchcore.errors.together`), so that a product's hundreds of files are mended in one go;
    :class:`ArchiveError` for a bad archive."""
    images: list[tuple[str, bytes]] = []
    ignored: list[str] = []
    problems: list[ImageError] = []
    budget = expanded_limit
    for index, (name, data) in enumerate(files, start=1):
        if name.lower().endswith(".zip"):
            members, skipped = _expand(name, data, member_limit, budget)
            budget -= sum(len(content) for _, _, content in members)
            ignored += skipped
            candidates = members
        else:
            candidates = [(name, name, data)]
        for source, plain, content in candidates:
            try:
                open_image(content, name=source, max_pixels=max_pixels, accept=accept, least=_smallest)
            except ImageError as exc:
                problems.append(exc)
                continue
            images.append((_plain_name(plain, content, f"upload-{index}"), content))
    if problems:
        raise together(problems)
    return images, ignored
