"""``python -m ingest db-dump`` and ``db-restore``: the store as one archive and back (:mod:`store.backup`)."""

from __future__ import annotations

import argparse

from config import get_settings
from store import backup, models
from store.database import connect, database_url
from store.migrate import upgrade


def run_dump(args: argparse.Namespace) -> int:
    url = database_url(get_settings())
    held = []
    if backup.holds_the_service(url):
        with connect(url, autocommit=True) as connection:
            held = models.active_models(connection)
    took = backup.dump(url, args.out)
    print(f"{args.out}: {took['bytes'] / 2**20:.1f} MiB in {took['seconds']:.1f} s, {len(held)} categories "
          f"({', '.join(m.category for m in held) or 'none'}); python -m ingest db-restore {args.out} puts it back "
          "into an empty database")  # fmt: skip
    return 0


def run_restore(args: argparse.Namespace) -> int:
    url = database_url(get_settings())
    took = backup.restore(url, args.archive)
    upgrade(url)  # an archive of an older build is migrated forward
    with connect(url, autocommit=True) as connection:
        held = models.active_models(connection)
    print(f"restored {args.archive} in {took['seconds']:.1f} s: {len(held)} categories")
    for model in held:
        print(f"  {model.category}: version {model.id}, {model.memory_bank_size} memory bank patches, "
              f"threshold {model.threshold:.4f}")  # fmt: skip
    return 0
