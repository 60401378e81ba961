"""``python -m ingest threshold``: a category's threshold set by value, false-alarm rate or labelled images."""

from __future__ import annotations

import argparse

from config import get_settings
from ingest.stored import active_model
from patchcore import progress
from patchcore.datasets.copies import distinct
from patchcore.datasets.mvtec import mvtec_category
from patchcore.model import exact_prediction
from revisions.threshold import set_threshold
from serving.inspector import Inspector
from store import banks, models
from store.database import connect, database_url
from store.migrate import upgrade


def _labelled_scores(connection, model: models.StoredModel, root, split: str) -> tuple[list[float], list[bool]]:
    """Image scores of the category's labelled test split by the stored model (exact search over its bank, which
    the served path equals: its re-rank makes s* and eq. 7 exact), less its copies, as a fit's evaluation reads it
    (:func:`patchcore.datasets.copies.distinct`: a test image with a training image's bytes is no part never seen)."""
    samples = distinct(mvtec_category(root, model.category, split)).test
    if not samples:
        raise ValueError(f"{root / model.category / 'test'} holds no labelled images")
    inspector = Inspector(model, banks.load_memory_bank(connection, model.bank_segments, model.dim), get_settings())
    bank = inspector.bank.embeddings
    scores = [
        exact_prediction(inspector.embed(inspector.embedder.preprocess.decode(s.path)), bank, model.config).score
        for s in progress.bar(samples, desc="labelled images", unit="img")
    ]
    return scores, [s.is_anomalous for s in samples]


def run_threshold(args: argparse.Namespace) -> int:
    url = database_url(get_settings())
    upgrade(url)
    with connect(url, autocommit=True) as connection:
        model = active_model(connection, args.category)
        labelled = _labelled_scores(connection, model, args.labelled, args.real_iad_split) if args.labelled else None
        version = set_threshold(
            connection,
            model,
            args.actor,
            value=args.value,
            false_alarm_rate=args.false_alarm_rate,
            labelled=labelled,
            labelled_are_test=labelled is not None,
            per=args.per,
        )
        models.retire_old_models(connection, args.category)
        new = models.active_model(connection, args.category)
    policy = new.threshold_policy
    print(
        f"{args.category}: version {version} (was {model.id}), threshold {model.threshold:.4f} -> {new.threshold:.4f} "
        f"({policy['kind']}); estimated false-alarm rate {policy['estimated_false_alarm_rate']:.2%}, "
        f"{policy['good_scores_above']} of {policy['good_scores']} good scores above it"
    )
    if part := policy.get("per_part"):
        print(
            f"   per part (each of {part['parts']} training parts by its worst view): estimated "
            f"{part['estimated_false_alarm_rate']:.2%} of good parts flagged on any view, {part['good_scores_above']} "
            f"of {part['parts']} above it"
        )
    return 0
