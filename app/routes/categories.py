"""The fitted categories: their summary and detail, plots, drift, the threshold (a new version without a refit), and
their deletion."""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Iterator
from typing import IO, Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response, StreamingResponse

from app.common import CATEGORY, ERRORS, active, actor_of, get_services, image_response
from app.schemas.categories import (
    CategoryDeleted,
    CategoryDetail,
    CategorySummary,
    FitRetired,
    ThresholdChange,
    ThresholdPreview,
    ThresholdRequest,
    VersionReactivated,
    VersionRequest,
)
from app.schemas.drift import DriftReport
from app.services import Services, UnknownCategory
from patchcore.threshold import HIGHEST_SHOWN
from revisions.threshold import planned, set_threshold
from serving import drift
from store import banks, changes, defects, exports, images, inspections, jobs, models, pictures, versions
from store.categories import delete_category

router = APIRouter(tags=["categories"])


def _summary(model: models.StoredModel) -> dict:
    return {
        "name": model.category,
        "model_id": model.id,
        "memory_bank_segments": list(model.bank_segments),
        "backbone": model.config.backbone,
        "embedding_dim": model.dim,
        "metric": model.config.metric,
        "threshold": model.threshold,
        "memory_bank_size": model.memory_bank_size,
        "fitted_at": model.fitted_at,
    }


@router.get("/categories", response_model=list[CategorySummary], responses=ERRORS, summary="Fitted categories")
def categories(request: Request) -> list[dict]:
    return [_summary(m) for m in get_services(request).run(models.active_models)]


@router.get("/categories/{name}", response_model=CategoryDetail, responses=ERRORS, summary="One category in full")
def category_detail(request: Request, name: Annotated[str, PathParam(**CATEGORY)]) -> dict:
    def read(connection):
        model = active(connection, name)
        return (
            model,
            images.image_counts(connection, model.bank_segments),
            images.highest_scored(connection, model.bank_segments, HIGHEST_SHOWN),
            banks.patch_count(connection, model.bank_segments),
            changes.changes(connection, model.category_id),
            versions.stored_versions(connection, model.category_id),
            versions.kept_fits(connection, model.category_id),
            pictures.plot_names(connection, model.fit_id),
            defects.library(connection, model.defect_segments),
            jobs.fit_images(connection, model.category, model.fit_id, model.bank_segments),
        )

    model, counts, highest, patches, log, kept, fits, plots, library, stored = get_services(request).run(read)
    return {
        **_summary(model),
        "settings": model.config.as_dict(),
        "threshold_policy": model.threshold_policy,
        "images": counts,
        "refit_images": stored,
        "highest_good_scores": [{**row, "above_threshold": row["score"] > model.threshold} for row in highest],
        "patches": patches,
        "coverage_radius": model.coverage_radius,
        "defect_library": library,
        "evaluation": model.evaluation,
        "timings": model.timings,
        "changes": log,
        "versions": kept,
        "fits": fits,
        "plots": plots,
    }


@router.get(
    "/categories/{name}/care-area",
    responses={**ERRORS, 200: {"content": {"image/png": {}}, "description": "the mask: white is inspected"}},
    response_class=Response,
    summary="The active version's care area: the mask of where on each picture the part is inspected",
)
def care_area(request: Request, name: Annotated[str, PathParam(**CATEGORY)]) -> Response:
    model = get_services(request).run(lambda connection: active(connection, name))
    if model.config.care is None:
        raise HTTPException(
            404,
            {"error": "no_care_area", "detail": f"{name} (version {model.id}) inspects every patch cell: it was "
             "fitted without a care area (python -m ingest fit ... --care-area MASK)"},
        )  # fmt: skip
    return image_response(request, model.config.care.png(), "image/png", "no-cache")  # a refit may draw another


@router.delete(
    "/categories/{name}",
    response_model=CategoryDeleted,
    responses={**ERRORS, 409: {"model": ERRORS[409]["model"], "description": "a fit job of it is queued or running"}},
    summary="Delete a product: its versions, memory banks, stored images and fit jobs; the logs stay",
)
def category_delete(request: Request, name: Annotated[str, PathParam(**CATEGORY)]) -> dict:
    """Every version of the category with its memory banks, good images (their files too), defect library and
    plots, and its fit jobs with their images. The inspection log keeps its records of the category (they outlive
    every version), and its change log ends with this deletion and goes on if the name is fitted again. Queries of
    it answer 404 from the moment it is taken out of service, on every API server. A 409 while a fit job of it is
    queued or running (it would fit the category again): cancel the job first. Cut short, the deletion is finished
    by asking again."""
    services = get_services(request)
    actor = actor_of(request)
    try:
        removed = services.run(delete_category, name, actor)
    except jobs.JobStateError as exc:
        raise HTTPException(409, {"error": "job_state", "detail": str(exc)}) from exc
    services.forget(name)
    if removed is None:
        raise UnknownCategory(name)
    return removed


@router.delete(
    "/categories/{name}/fits/{fit}",
    response_model=FitRetired,
    responses={
        **ERRORS,
        404: {"model": ERRORS[404]["model"], "description": "unknown category or fit"},
        409: {"model": ERRORS[409]["model"], "description": "the fit is answering"},
    },
    summary="Retire an earlier fit kept for an undo now: its memory bank, versions and job images go",
)
def fit_retire(request: Request, name: Annotated[str, PathParam(**CATEGORY)], fit: int) -> dict:
    """A kept earlier fit (``fits`` of ``GET /categories/{name}``) retired now rather than at a later fit, once a
    refit is known to be good: its memory bank, its versions and its job's images go, the disk they took is free
    (a segment of it that the answering fit's versions read, known defects carried over, stays). A 404 for a fit
    the category does not keep, 409 for the one answering (make a version of another fit active first)."""
    actor = actor_of(request)
    try:
        retired = get_services(request).run(models.retire_fit, name, fit, actor)
    except models.FitInService as exc:
        raise HTTPException(409, {"error": "fit_in_service", "detail": str(exc)}) from exc
    except LookupError as exc:
        raise HTTPException(404, {"error": "unknown_fit", "detail": str(exc)}) from exc
    return {"category": name, "fit": fit, "versions": retired}


@router.get(
    "/categories/{name}/plots/{plot}",
    responses={**ERRORS, 200: {"content": {"image/png": {}}, "description": "the plot"}},
    response_class=Response,
    summary="An evaluation plot of the category's fit (roc, scores, heatmaps, example), from the database",
)
def category_plot(
    request: Request, name: Annotated[str, PathParam(**CATEGORY)], plot: Annotated[str, PathParam(**CATEGORY)]
) -> Response:
    def read(connection):
        model = active(connection, name)
        return pictures.plot(connection, model.fit_id, plot)

    found = get_services(request).run(read)
    if found is None:
        raise HTTPException(404, {"error": "unknown_plot", "detail": f"{name} has no plot {plot}; see its plots"})
    return image_response(request, found[1], found[0], "no-cache")


ZIP_SPOOL = 32 << 20  # an export's zip is built in memory up to this size, then in a temporary file
ZIP_CHUNK = 1 << 20


@router.get(
    "/categories/{name}/good-images.zip",
    responses={
        **ERRORS,
        200: {"content": {"application/zip": {}}, "description": "the files and manifest.json, in a folder <name>/"},
        409: {"model": ERRORS[409]["model"], "description": "the database keeps no file of the category's images"},
    },
    response_class=StreamingResponse,
    summary="The category's good images as the files they were sent as, with a manifest: to fit from, or keep",
)
def category_good_images(request: Request, name: Annotated[str, PathParam(**CATEGORY)]) -> StreamingResponse:
    """The files the database keeps of the active version's good images (the fit's own, stored with the job that
    fitted it, and those added since) in a zip, under a folder named for the category, with ``manifest.json``: each
    file's split and sha256, the version's settings, and the images whose files the database does not keep (a fit
    from files) with why. ``python -m ingest fit --folder <name>`` fits from the unpacked folder;
    ``python -m ingest export`` writes the same files to a folder. A 409 when the database keeps none."""
    spool = tempfile.SpooledTemporaryFile(max_size=ZIP_SPOOL)  # noqa: SIM115 (the response's _chunks closes it)

    def write(connection) -> int:
        model = active(connection, name)
        with zipfile.ZipFile(spool, "w", zipfile.ZIP_STORED) as archive:  # images are compressed already
            exports.export(connection, model, lambda file, data: archive.writestr(f"{name}/{file}", data))
        return model.id

    try:
        model_id = get_services(request).run(write)
    except jobs.NoStoredImages as exc:
        spool.close()
        raise HTTPException(409, {"error": "no_stored_images", "detail": str(exc)}) from exc
    except BaseException:
        spool.close()
        raise
    size = spool.tell()
    spool.seek(0)
    headers = {
        "Content-Disposition": f'attachment; filename="{name}-version-{model_id}-good-images.zip"',
        "Content-Length": str(size),
        "Cache-Control": "no-store",
    }
    return StreamingResponse(_chunks(spool), media_type="application/zip", headers=headers)


def _chunks(file: IO[bytes]) -> Iterator[bytes]:
    with file:
        while chunk := file.read(ZIP_CHUNK):
            yield chunk


@router.get(
    "/categories/{name}/drift",
    response_model=DriftReport,
    responses=ERRORS,
    summary="Is the line drifting: the share of parts flagged recently, against the calibration of their thresholds",
)
def category_drift(request: Request, name: Annotated[str, PathParam(**CATEGORY)]) -> dict:
    return drift_report(get_services(request), name)


def drift_report(services: Services, name: str, distributions: bool = True) -> dict:
    """The drift report of ``name``; ``distributions``: with the recent and good scores (the page's plot), which the
    metrics scrape does not read."""
    hours = services.settings.drift_hours

    def read(connection):
        model = active(connection, name)
        policies = versions.calibrated_alike(connection, model)
        pooled = sorted(policies)
        counted = (inspections.hourly(connection, pooled, hours), inspections.hourly_parts(connection, pooled, hours))
        if not distributions:
            return model, policies, pooled, counted, {}
        return (
            model,
            policies,
            pooled,
            counted,
            {
                "scores": inspections.recent_scores(connection, pooled, hours),
                "good_scores": images.good_scores(connection, model.bank_segments)[0],
            },
        )

    model, policies, pooled, ((hourly, answered), hourly_parts), scores = services.run(read)
    predicted = drift.pooled_rate(policies, answered, model.id, lambda p: p.get("estimated_false_alarm_rate"))
    per_part = drift.pooled_rate(
        policies, answered, model.id, lambda p: p.get("per_part", {}).get("estimated_false_alarm_rate")
    )
    report = drift.drift(hourly, predicted, hours)
    parts = drift.parts_drift(hourly_parts, per_part)
    return {"category": name, "model_id": model.id, "threshold": model.threshold, "versions": pooled,
            **report, "parts": parts, "reviews": drift.reviewed(hourly, predicted),
            "body": drift.body(hourly, predicted), **scores}  # fmt: skip


@router.get(
    "/categories/{name}/threshold",
    response_model=ThresholdPreview,
    responses=ERRORS,
    summary="What a threshold by value or false-alarm rate would do, judged on the stored evaluation; nothing is set",
)
def preview_threshold(
    request: Request,
    name: Annotated[str, PathParam(**CATEGORY)],
    value: Annotated[float | None, Query(gt=0, description="the threshold itself")] = None,
    false_alarm_rate: Annotated[
        float | None, Query(gt=0, lt=0.5, description="the threshold at this expected false-alarm rate on good parts")
    ] = None,
    per: Annotated[
        Literal["image", "part"], Query(description="whose false-alarm rate: each image's, or each part's (any view)")
    ] = "image",
    log_hours: Annotated[
        float, Query(gt=0, le=24 * 366, description="the inspection log's answers of the last this many hours")
    ] = inspections.PREVIEW_HOURS,
) -> dict:
    """Exactly one of the two, as ``PUT`` takes them: the answer is the version ``PUT`` would make now, unwritten,
    with the line's own recent answers counted at it beside the active threshold (``log``)."""
    if (value is None) == (false_alarm_rate is None):
        detail = "give exactly one of value or false_alarm_rate"
        raise HTTPException(422, {"error": "invalid_threshold", "detail": detail})

    def read(connection):
        model = active(connection, name)
        try:
            change = planned(connection, model, value=value, false_alarm_rate=false_alarm_rate, per=per)
        except ValueError as exc:
            raise HTTPException(422, {"error": "invalid_threshold", "detail": str(exc)}) from exc
        counted = inspections.at_thresholds(
            connection, name, model.bank_segments, log_hours, change.threshold, model.threshold
        )
        return model, change, counted

    model, change, counted = get_services(request).run(read)
    return {
        "category": name,
        "model_id": model.id,
        "threshold": change.threshold,
        "current_threshold": model.threshold,
        "threshold_policy": change.policy,
        "evaluation": change.evaluation,
        "log": {"hours": log_hours, **counted._asdict()},
    }


@router.put(
    "/categories/{name}/threshold",
    response_model=ThresholdChange,
    responses=ERRORS,
    summary="Set the threshold by value or false-alarm rate: a new version, no refit",
)
def put_threshold(request: Request, name: Annotated[str, PathParam(**CATEGORY)], body: ThresholdRequest) -> dict:
    actor = actor_of(request)

    def change(connection):
        model = active(connection, name)
        try:
            version = set_threshold(
                connection, model, actor, value=body.value, false_alarm_rate=body.false_alarm_rate, per=body.per
            )
        except ValueError as exc:
            raise HTTPException(422, {"error": "invalid_threshold", "detail": str(exc)}) from exc
        models.retire_old_models(connection, name, get_services(request).settings.fits_kept)
        return model, models.active_model(connection, name), version

    previous, new, version = get_services(request).run(change)
    return {**_switched(name, previous, new), "model_id": version, "threshold_policy": new.threshold_policy}


def _switched(name: str, previous: models.StoredModel, new: models.StoredModel) -> dict:
    """What every change of a category's active version answers: the version before and after, and their
    thresholds."""
    return {
        "category": name,
        "model_id": new.id,
        "previous_model_id": previous.id,
        "threshold": new.threshold,
        "previous_threshold": previous.threshold,
    }


@router.put(
    "/categories/{name}/active-version",
    response_model=VersionReactivated,
    responses={**ERRORS, 404: {"model": ERRORS[404]["model"], "description": "unknown category or version"}},
    summary="Go back (or forward) to a stored version of the category, as it was: no refit",
)
def put_active_version(request: Request, name: Annotated[str, PathParam(**CATEGORY)], body: VersionRequest) -> dict:
    """The stored version ``model_id`` (``versions`` of ``GET /categories/{name}``: every version of the kept fits,
    the current one and those in service most recently before it) answers again with its own threshold, memory bank
    and known defects (a kept earlier fit's with its own network and settings: a refit undone), from the next query
    on, on every API server; the versions made since stay stored, so the step can be undone the same way. A 404 for
    a version the category does not store (a retired fit's went with it), 409 when the category changed
    meanwhile."""
    actor = actor_of(request)

    def change(connection):
        model = active(connection, name)
        try:
            versions.reactivate(connection, model, body.model_id, actor)
        except versions.UnknownVersion as exc:
            raise HTTPException(404, {"error": "unknown_version", "detail": str(exc)}) from exc
        return model, models.active_model(connection, name)

    previous, new = get_services(request).run(change)
    return {**_switched(name, previous, new), "memory_bank_size": new.memory_bank_size}
