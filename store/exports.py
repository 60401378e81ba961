"""A category's good images out of the database, as the files they were sent as, with a manifest: for a refit from
files with other settings (``python -m ingest fit --folder``), another deployment, or a backup. The database is the
system of record of what a product was learnt from, so what it keeps can leave it: the files of the fit's own images
while the job that fitted it keeps them (:mod:`store.jobs`), and those of the good images added since (migration
0015). What it does not keep (a fit from files, whose files are where it was fitted from; images added before their
files were kept) is named in the manifest, never silently missing. Used by ``python -m ingest export`` and
``GET /categories/{name}/good-images.zip``."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import PurePosixPath

import psycopg

from store.jobs import NoStoredImages, source_job
from store.models import StoredModel

MANIFEST = "manifest.json"  # not an image: a fit from the folder reads past it


def export(connection: psycopg.Connection, model: StoredModel, put: Callable[[str, bytes], None]) -> dict:
    """Hand every kept file of ``model``'s good images to ``put(name, data)``, a few rows at a time through a
    server-side cursor (a category may hold gigabytes), the fit's own first, then the manifest (:data:`MANIFEST`);
    returns the manifest. Names are the files' own, made unique within the export. Raises
    :class:`~store.jobs.NoStoredImages` when the database keeps no file of the version's good images."""
    segments = list(model.bank_segments)
    with connection.transaction(), connection.cursor() as cursor:
        source = source_job(cursor, model.category, model.fit_id, lock=False)
        job_id = source[0] if source else None
        not_kept = [
            {"file": name, "split": split, "why": why}
            for name, split, why in cursor.execute(
                "SELECT file_name, split, 'fitted from files (its file is where the fit read it), or its job deleted' "
                "FROM images "
                "WHERE model_id = %s AND split <> 'added' AND %s::bigint IS NULL "
                "UNION ALL SELECT i.file_name, i.split, 'added before the files of added images were kept' "
                "FROM images i WHERE i.model_id = ANY(%s) AND i.split = 'added' "
                "AND NOT EXISTS (SELECT 1 FROM image_originals o WHERE o.image_id = i.id) ORDER BY 2 DESC, 1",
                (model.fit_id, job_id, segments),
            )
        ]
        with connection.cursor(name=f"export_{model.id}") as rows:
            rows.execute(
                "SELECT * FROM (SELECT file_name, 'train' AS split, sha256, data, part FROM fit_job_images "
                "WHERE job_id = %s UNION ALL SELECT o.file_name, 'added', i.sha256, o.data, i.part FROM images i "
                "JOIN image_originals o ON o.image_id = i.id WHERE i.model_id = ANY(%s) AND i.split = 'added') f "
                'ORDER BY split DESC, file_name COLLATE "C"',  # bytewise: the same names whatever the collation
                (job_id, segments),
            )
            files: list[dict] = []
            taken = {MANIFEST.casefold()}
            for name, split, digest, data, part in rows:
                unique = _unique(_safe(name, len(files)), taken)
                put(unique, bytes(data))
                files.append({"file": unique, "split": split, "sha256": digest, "bytes": len(data)})
                if part is not None:  # a view of a part the job named (store.jobs.name_parts)
                    files[-1]["part"] = part
    if not files:
        raise NoStoredImages(
            f"the database keeps no file of {model.category}'s good images (version {model.id} was fitted from "
            "files, or its job was deleted, and keeps no file of a good image added since): its files are where it "
            "was fitted from"
        )
    manifest = {
        "category": model.category,
        "model_id": model.id,
        "fit_job": job_id,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": model.config.as_dict(),
        "files": files,
        "not_kept": not_kept,
    }
    put(MANIFEST, json.dumps(manifest, indent=1).encode())
    return manifest


def _safe(name: str, position: int) -> str:
    """The file's own name without any folder (an upload's name is the sender's: never a path out of the export)."""
    base = PurePosixPath(name.replace("\\", "/")).name
    return base if base not in ("", ".", "..") else f"image-{position + 1}"


def _unique(name: str, taken: set[str]) -> str:
    """``name``, or ``<stem>-<n><suffix>`` with the first ``n`` not yet ``taken`` (case folded: two names that differ
    in case only are one file on the file systems of macOS and Windows); then taken."""
    path, number, unique = PurePosixPath(name), 1, name
    while unique.casefold() in taken:
        number += 1
        unique = f"{path.stem}-{number}{path.suffix}"
    taken.add(unique.casefold())
    return unique
