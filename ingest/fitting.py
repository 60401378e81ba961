"""``python -m ingest fit`` and ``evaluate``: each category of a dataset fitted, evaluated on its labelled test split
where it has one, reported (and stored, for ``fit``). What is checked before the fit is checked first; a failure
after it keeps the fitted model."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from config import get_settings
from patchcore import regions
from patchcore.backbone import RANDOM_WEIGHTS
from patchcore.care import CareArea
from patchcore.datasets.category import Category
from patchcore.evaluation import Evaluation, evaluate
from patchcore.features import STRIDES
from patchcore.model import Embedder, FittedModel, PatchCoreConfig, exact_scorer, fit
from patchcore.threshold import labelled_threshold


def _config(args: argparse.Namespace) -> PatchCoreConfig:
    return PatchCoreConfig(
        backbone=args.backbone,
        layers=tuple(args.layers.split(",")),
        field_of_view=args.field_of_view,
        resize=args.resize,
        crop=args.crop,
        pixels=args.pixels,
        tile=args.tile,
        tile_overlap=args.tile_overlap,
        metric=args.metric,
        coreset_ratio=args.coreset_ratio,
        num_neighbors=args.neighbors,
        holdout_fraction=args.holdout,
        false_alarm_rate=args.false_alarm_rate,
        seed=args.seed,
        white_level=args.white_level,
        care_area=CareArea.read(args.care_area.read_bytes(), str(args.care_area)).png() if args.care_area else None,
    )


def _validation_fitted(category: Category) -> list[Path]:
    """The set's validation images among those fitted (less any excluded or left out as copies)."""
    fitted = set(category.train)
    return [path for path in category.validation if path in fitted]


def _copies_left_out(category: Category) -> list[dict]:
    """The images left out as copies of another (:func:`patchcore.datasets.copies.distinct`), each with the one kept
    and, where that one is a defective test image, its defect type: a good image with a defect's bytes."""
    defects = {sample.path: sample.defect for sample in category.test if sample.is_anomalous}
    return [
        {"file": str(copy), "copy_of": str(kept)} | ({"copy_of_defect": defects[kept]} if kept in defects else {})
        for copy, kept in category.copies.items()
    ]


def _say_view(scale: dict, stride: int) -> None:
    """Say how finely the view saw the good images (:func:`ingest.report.view_scale`), and where a finer view would
    show more: not where every image is seen at its own pixels or larger (a patch spans at most ``stride`` of them,
    the patches' step in the view), since enlarging a picture adds no detail to it."""
    (width, height), (view_w, view_h) = scale["image"], scale["view"]
    sizes = f"{scale['images_of_that_size']} of {scale['images']} images" if scale["image_sizes"] > 1 else "the images"
    spread = ""
    if scale["image_sizes"] > 1:
        spread = (
            f"; over their {scale['image_sizes']} sizes from {_spans(scale['finest'])} to {_spans(scale['coarsest'])}"
        )
    coarsest = scale["coarsest"]["patch_pixels"]
    advice = (
        "a defect much smaller than that changes its patch little (a finer view: --pixels, --tile)"
        if max(coarsest) > stride
        else "every image is seen at its own pixels or larger, so a finer view would add no detail"
    )
    print(
        f"   seen at {view_w}x{view_h}: one patch spans {_pixels(scale['patch_pixels'])} pixels of {sizes} "
        f"({width}x{height}){spread}; {advice}",
        flush=True,
    )


def _pixels(patch: list[float]) -> str:
    """A patch's span in whole pixels, halves rounded up as the category page rounds them."""
    return "x".join(str(int(side + 0.5)) for side in patch)


def _spans(end: dict) -> str:
    width, height = end["image"]
    return f"{_pixels(end['patch_pixels'])} ({width}x{height})"


def _fit(args: argparse.Namespace, category: Category) -> tuple[FittedModel, Embedder]:
    config = _config(args)
    weights = RANDOM_WEIGHTS if args.random_weights else args.weights
    print(
        f"== {category.name}: {len(category.train)} good training images, {len(category.test)} test images, "
        f"{config.backbone} ({config.embedding_dim} dims), metric {config.metric}",
        flush=True,
    )
    if config.care is not None:
        width, height = config.care.size
        print(
            f"   care area: {config.care.share:.1%} of each picture ({width}x{height} mask, stretched over it)",
            flush=True,
        )
    if category.left_out:
        print(
            f"   left out of the fit: {len(category.left_out)} images of the training split that the set marks "
            f"defective (as {category.left_out[0]})",
            flush=True,
        )
    if category.excluded:
        print(f"   excluded (--exclude): {', '.join(str(p) for p in category.excluded)}", flush=True)
    if category.unread:
        print(f"   not read: {len(category.unread)} images in folders below the set's own (as {category.unread[0]}): "
              "its layout reads each folder's images, not those of folders within it; move them up to fit or "
              "judge them", flush=True)  # fmt: skip
    validation = _validation_fitted(category)
    if validation:
        print(f"   of them {len(validation)} from the set's validation split ({validation[0].parent}): good parts too, "
              "fitted with the training images", flush=True)  # fmt: skip
    copies = _copies_left_out(category)
    if copies:
        print(f"   left out as copies (the same bytes as another image of {category.name}): {len(copies)} (as "
              f"{copies[0]['file']}, a copy of {copies[0]['copy_of']})", flush=True)  # fmt: skip
    for copy in (copy for copy in copies if "copy_of_defect" in copy):
        print(f"   {copy['file']} has the bytes of the defective test image {copy['copy_of']} "
              f"({copy['copy_of_defect']}): a defect among the good images, left out of them", flush=True)  # fmt: skip
    embedder = Embedder.load(config, weights, args.device)
    model = fit(config, category.train, weights, args.batch_size, embedder=embedder,
                features_in_memory_max=get_settings().fit_memory_bytes, parts=category.parts, per=args.per)  # fmt: skip
    if model.parts:
        print(f"   the training images show {model.parts} parts, several views each: the hold-out and the folds "
              "took whole parts, so no good score had another view of its part in the bank", flush=True)  # fmt: skip
    if model.features_on_disk:
        print(f"   the features were mapped from a temporary file in {tempfile.gettempdir()} (more than "
              "INSPECT_FIT_MEMORY_MB, or half the memory available): the same model", flush=True)  # fmt: skip
    return model, embedder


def _evaluate(
    args: argparse.Namespace, category: Category, model: FittedModel, embedder: Embedder
) -> Evaluation | None:
    config = model.config
    if not category.test:
        return None
    evaluation = evaluate(
        category.test, exact_scorer(model, embedder), config.preprocess, model.threshold,
        config.false_alarm_rate, good_scores=model.good_scores, good_parts=model.good_parts, care=config.care,
    )  # fmt: skip
    if args.calibrate_on_test:
        model.threshold, model.threshold_policy = labelled_threshold(
            evaluation.scores, evaluation.labels, model.good_scores, model.good_parts, config.false_alarm_rate
        )
        evaluation.set_threshold(model.threshold, config.false_alarm_rate)
        evaluation.figures["threshold_set_on_these_images"] = True
        print(
            f"{category.name}: threshold {model.threshold:.4f} set at the best F1 on the test split, so its F1 "
            f"there is optimistic; cross-validated F1 {model.threshold_policy['f1_cross_validated']:.4f}",
            flush=True,
        )
    return evaluation


def _say_highest(threshold: float, ranked: list[dict]) -> None:
    """Name the good images (``ranked`` by their good scores) above the threshold: as new parts they would be flagged,
    so each is a defect in the good set (refit without it: ``--exclude``) or a look the bank has too few of (teach
    more)."""
    above = [h for h in ranked if h["above_threshold"]]
    if above:
        names = ", ".join(f"{h['file']} {h['score']:.3f}" for h in above[:5]) + (", ..." if len(above) > 5 else "")
        print(
            f"   {len(above)} of {len(ranked)} good images score above the threshold {threshold:.4f} as unseen "
            f"parts ({names}): look at them for a defect (refit with --exclude NAME) or a rare good look",
            flush=True,
        )


def _say_calibration(threshold: float, policy: dict) -> None:
    """Say how far the good scores vouch for a threshold set at a target false-alarm rate: the rule that set it and
    how many good scores lie above it, with the interval, so that a fit on few good images shows on the terminal how
    little they can promise (0 of 3 above is compatible with 63% false alarms), as the report and the category page
    do."""
    if policy.get("kind") != "false_alarm_rate":
        return
    low, high = policy["observed_false_alarm_interval"]
    per = "good parts, any view" if policy.get("per") == "part" else "good images"
    print(
        f"   threshold {threshold:.4f} at a {policy['target_false_alarm_rate']:.1%} target false-alarm rate ({per}): "
        f"{policy['method']}; {policy['good_scores_above']} of {policy['good_scores']} good scores above it "
        f"({policy['observed_false_alarm_rate']:.1%}; {policy['interval_level']:.0%} interval {low:.1%}-{high:.1%})",
        flush=True,
    )


def run_fit(args: argparse.Namespace, store: bool) -> int:
    """Fit, evaluate, report (and store) each category. Everything that can be checked is checked first; a failure
    after a fit (evaluation, plots, report) still stores the fitted model, says what failed and exits 1."""
    from ingest import preflight, report, sets

    categories = sets.categories(args)
    config = _config(args)
    if config.care_area is not None and len(categories) > 1:
        raise ValueError(
            f"--care-area is drawn over one camera's pictures: fit one category with it, not {len(categories)}"
        )
    if store:
        from store.models import check_dimension

        check_dimension(config.embedding_dim)
    if args.calibrate_on_test:
        for category in categories:
            if not category.test:
                raise ValueError(f"{category.name} has no labelled test split to calibrate on")
    if store and args.if_changed:
        from ingest.unchanged import to_fit

        categories = to_fit(categories, config, args)
        if not categories:
            return 0
    preflight.check(categories, config.preprocess, args.out, store, args.per)
    rows = {}
    failures = []
    for category in categories:
        model, embedder = _fit(args, category)
        folder = args.out / category.name
        try:
            evaluation = _evaluate(args, category, model, embedder)
            result = report.build(category.name, model, evaluation)
            figures = report.write_plots(result, evaluation, model, folder)
            cells = evaluation.cells if evaluation is not None else None  # None: no test split (--folder)
            cells = None if cells is None else regions.packed(*cells)
        except Exception as exc:  # the fit is not lost for it: stored without its evaluation
            failures.append(f"{category.name}: the evaluation failed after the fit: {type(exc).__name__}: {exc}")
            if args.calibrate_on_test and model.threshold_policy.get("kind") != "labelled_f1":
                failures[-1] += " (the threshold is the one from good images, not from the labelled test split)"
            print(f"error: {failures[-1]}", file=sys.stderr, flush=True)
            result = report.build(category.name, model, None, {"evaluation_error": failures[-1]})
            figures, cells = [], None
        if category.left_out:
            result["left_out_of_training"] = [str(path) for path in category.left_out]
        if category.excluded:
            result["excluded_from_training"] = [str(path) for path in category.excluded]
        if category.unread:
            result["not_read"] = [str(path) for path in category.unread]
        if category.copies:
            result["copies_left_out"] = _copies_left_out(category)
        if validation := _validation_fitted(category):
            result["validation_images_fitted"] = [str(path) for path in validation]
        _say_view(result["view_scale"], STRIDES[model.config.layers[0]])
        _say_calibration(model.threshold, model.threshold_policy)
        _say_highest(model.threshold, report.highest_good_scores(model, limit=None))
        if store:
            from ingest.persist import store_model

            result.update(store_model(category.name, model, result, figures, cells=cells))
        try:
            print(f"report: {report.write(result, folder)}", flush=True)
        except OSError as exc:
            failures.append(f"{category.name}: the report could not be written: {exc}")
            print(f"error: {failures[-1]}", file=sys.stderr, flush=True)
        rows[category.name] = result
        if store and args.served and category.test and "evaluation_error" not in result:
            from ingest.served import evaluate_served

            evaluate_served(category.name, category, folder, None)
    print(report.table(rows))
    if failures:
        stored = " (the fitted models are stored and serve)" if store else ""
        print(f"error: {len(failures)} failure(s) after fitting{stored}:\n" + "\n".join(failures), file=sys.stderr)
        return 1
    return 0
