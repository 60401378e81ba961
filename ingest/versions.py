"""``python -m ingest versions``: the stored versions of a category's kept fits, one made active again
(:func:`store.versions.reactivate`) and an earlier fit retired now (:func:`store.models.retire_fit`), as the category
page, ``PUT /categories/{name}/active-version`` and ``DELETE /categories/{name}/fits/{fit}`` do."""

from __future__ import annotations

import argparse

from config import get_settings
from ingest.stored import active_model
from store import models, versions
from store.database import connect, database_url
from store.migrate import upgrade


def run_versions(args: argparse.Namespace) -> int:
    url = database_url(get_settings())
    upgrade(url)
    with connect(url, autocommit=True) as connection:
        model = active_model(connection, args.category)
        if args.activate is not None:
            try:
                versions.reactivate(connection, model, args.activate, args.actor)
            except versions.UnknownVersion as exc:
                raise ValueError(str(exc)) from exc
            model = active_model(connection, args.category)
        if args.retire_fit is not None:
            try:
                retired = models.retire_fit(connection, args.category, args.retire_fit, args.actor)
            except (LookupError, models.FitInService) as exc:
                raise ValueError(str(exc)) from exc
            print(f"fit {args.retire_fit} retired: {retired} version(s) went")
        stored = versions.stored_versions(connection, model.category_id)
    for i, v in enumerate(stored):
        if i == 0 or stored[i - 1]["fit"] != v["fit"]:
            print(f"fit {v['fit']}, {v['fitted_at']}" + (": answering" if v["fit"] == model.fit_id else ": kept"))
        mark, made = "*" if v["active"] else " ", f"{v['made_by'] or '?'} {v['made_at'] or ''}"
        print(f"{mark} version {v['model_id']}: {made}, threshold {v['threshold']:.4f}, "
              f"{v['memory_bank_size']} patches, by {v['actor'] or '?'}")  # fmt: skip
    print(f"{args.category}: version {model.id} is active (*); --activate ID makes another answer again, as it was")
    return 0
