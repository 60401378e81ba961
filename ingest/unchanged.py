"""``python -m ingest fit --if-changed``, what ``run.sh`` runs at every start: a category whose active version
descends from a fit of these very good images with these very settings is kept, not fitted again.

Why it is safe: a fit is a function of its good images (their bytes and the parts they show), its settings, its
weights and its seed, all seeded, so a second fit of the same would make the same model again, and a refit would only
replace the active version, dropping what was taught since (added good images, known defects, a threshold set
later) and starting the drift window again. Anything that would make a different model is fitted: an image more, less
or changed, another part named, another setting or weights file, or a threshold from the test split. A fit made by
an earlier build of this code is kept too: a new build's model is for ``ingest fit`` to bring in, on purpose."""

from __future__ import annotations

import argparse
import hashlib
from collections import Counter
from dataclasses import fields
from pathlib import Path

import psycopg

from config import get_settings
from patchcore.backbone import weights_sha256
from patchcore.datasets.category import Category
from patchcore.model import PatchCoreConfig
from patchcore.threshold import PER_IMAGE
from store.database import connect, database_url
from store.images import fitted_images
from store.migrate import upgrade
from store.models import StoredModel, active_model, model_by_id

SHOWN = 3  # files named of those that differ


def to_fit(categories: list[Category], config: PatchCoreConfig, args: argparse.Namespace) -> list[Category]:
    """The categories to fit; of the others, each kept version is said, and why fitting again would not help."""
    url = database_url(get_settings())
    upgrade(url)
    fitting = []
    with connect(url, autocommit=True) as connection:
        for category in categories:
            why, active = why_fit(connection, category, config, args)
            if why is None:
                print(
                    f"{category.name}: kept version {active.id}: its fit was made from these {len(category.train)} "
                    "good images with these settings, and fitting them again would make the same model and drop "
                    "what was taught since (python -m ingest fit without --if-changed fits it again)",
                    flush=True,
                )
                continue
            if active is not None:
                print(f"{category.name}: fitted again, for {why}", flush=True)
            fitting.append(category)
    return fitting


def why_fit(
    connection: psycopg.Connection, category: Category, config: PatchCoreConfig, args: argparse.Namespace
) -> tuple[str | None, StoredModel | None]:
    """Why ``category`` is fitted again (None where its active version's fit is this very fit), and that version."""
    active = active_model(connection, category.name)
    fit = model_by_id(connection, active.fit_id) if active is not None else None
    if active is None or fit is None:
        return "no version yet", active
    said = f"version {active.id}'s fit (version {fit.id}, fitted {fit.fitted_at[:16]})"
    if args.calibrate_on_test:
        return "--calibrate-on-test sets its threshold from the test split", active
    if args.random_weights:
        return "--random-weights draws new weights", active
    if settings := _settings_differ(config, fit.config):
        return f"other settings than {said}: {settings}", active
    digest = weights_sha256(args.weights) if args.weights and Path(args.weights).is_file() else args.weights
    if digest != fit.weights_sha256:
        return f"other weights than {said} ({args.weights or 'the download'})", active
    per = fit.threshold_policy.get("per", PER_IMAGE)
    if args.per != per:
        return f"a target false-alarm rate per {args.per} where {said} set one per {per}", active
    if images := _images_differ(category, fitted_images(connection, fit.id)):
        return f"other good images than {said}: {images}", active
    return None, active


def _settings_differ(asked: PatchCoreConfig, fitted: PatchCoreConfig) -> str:
    """The settings that differ, each as ``name fitted -> asked``; a white level not given is the one the fit found
    in the same images."""
    differ = []
    for field in fields(PatchCoreConfig):
        new, old = getattr(asked, field.name), getattr(fitted, field.name)
        if field.name == "white_level" and new is None:
            continue
        if new != old:  # two masks (care areas) that differ are said as such: neither is printed
            masks = isinstance(new, bytes) and isinstance(old, bytes)
            differ.append(f"{field.name}: another mask" if masks else f"{field.name} {_short(old)} -> {_short(new)}")
    return ", ".join(differ)


def _short(value: object) -> str:
    """A setting as said: a mask (a care area) is bytes, named as one rather than printed."""
    return "a mask" if isinstance(value, bytes) else str(value)


def _images_differ(category: Category, fitted: list[tuple[str, str | None, str]]) -> str:
    """How the set's good images differ from the fit's, by content and part: how many are new and gone, a few
    named; empty where they are the same."""
    here = {path: (hashlib.sha256(path.read_bytes()).hexdigest(), category.parts.get(path)) for path in category.train}
    before = Counter((digest, part) for digest, part, _ in fitted)
    now = Counter(here.values())
    new, gone = now - before, before - now
    if not new and not gone:
        return ""
    said = []
    if new:
        named = [path.name for path, key in here.items() if key in new][:SHOWN]
        said.append(f"{new.total()} new or changed ({', '.join(named)}{', ...' if new.total() > SHOWN else ''})")
    if gone:
        named = [name for digest, part, name in fitted if (digest, part) in gone][:SHOWN]
        said.append(f"{gone.total()} gone ({', '.join(named)}{', ...' if gone.total() > SHOWN else ''})")
    return ", ".join(said)
