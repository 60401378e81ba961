"""``python -m ingest delete``: a product out of the database (:mod:`store.categories`), said in full before it
goes: without ``--yes`` the command counts what would be deleted and changes nothing."""

from __future__ import annotations

import argparse

from config import get_settings
from ingest.stored import not_stored
from store import categories
from store.database import connect, database_url
from store.migrate import upgrade


def _counted(number: int, what: str) -> str:
    return f"{number} {what}" if number == 1 else f"{number} {what}{'es' if what.endswith('ch') else 's'}"


def _said(counted: dict) -> str:
    words = {"versions": "version", "images": "good image", "patches": "memory bank patch",
             "defect_examples": "known defect", "jobs": "fit job", "files": "stored file"}  # fmt: skip
    listed = ", ".join(_counted(counted[key], what) for key, what in words.items())
    return f"{listed} ({counted['file_bytes'] / 2**20:.1f} MiB)"


def run_delete(args: argparse.Namespace) -> int:
    url = database_url(get_settings())
    upgrade(url)
    with connect(url, autocommit=True) as connection:
        if not args.yes:
            counted = categories.contents(connection, args.category)
            if counted is None:
                raise ValueError(not_stored(connection, args.category))
            print(f"{args.category} would go: {_said(counted)}; the inspection log keeps its records. "
                  "Nothing is deleted without --yes.")  # fmt: skip
            return 1
        removed = categories.delete_category(connection, args.category, args.actor)
        if removed is None:
            raise ValueError(not_stored(connection, args.category))
    print(f"deleted {args.category}: {_said(removed)}; the inspection log keeps its records")
    return 0
