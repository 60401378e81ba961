"""The HTTP layer: routes, request limits and error mapping. Scoring lives in :mod:`serving.inspector`."""

from __future__ import annotations

import hashlib
import io
import logging
import time
from contextlib import asynccontextmanager
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

import torch
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import memory, observability
from app.auth import Guard, Keys, RateLimit
from app.common import CATEGORY, ERRORS, actor_of, get_services, read_limited
from app.limits import BodyLimit
from app.routes import jobs as jobs_routes
from app.schemas import (
    AnomalousPatch,
    CategoryDetail,
    CategorySummary,
    DefectsAdded,
    DriftReport,
    FeedbackResult,
    Health,
    InspectionPage,
    InspectionRecord,
    NormalsAdded,
    QueryResponse,
    Ready,
    ReviewRequest,
    ThresholdChange,
    ThresholdRequest,
)
from app.services import DatabaseUnavailable, RecordRefused, Services, UnknownCategory
from config import get_settings
from config.keys import parse_keys
from patchcore import ImageError, WeightsError
from patchcore.errors import ImageShapeError, ImageTooLargeError
from patchcore.features import STRIDES
from patchcore.images import open_image
from revisions.defects import DefectUpload, add_defects, check_defect_type
from revisions.normals import NeedsRefit, add_normals
from revisions.threshold import set_threshold
from revisions.uploads import Upload
from serving import drift, logbook
from serving.heatmap import heatmap_png, overlay
from serving.inspector import Inspection, Inspector, ModelReplaced
from store import banks, changes, defects, images, inspections, models, pictures, versions

log = logging.getLogger("app")


@asynccontextmanager
async def lifespan(app: FastAPI):
    settings = get_settings()
    observability.configure_logs()
    memory.cap_malloc_arenas()
    if not _keys().keys:
        log.warning(OPEN_WARNING)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    services = Services(settings)
    _POOL["stats"] = services.pool.get_stats
    _POOL["standbys"] = services.standbys.describe
    _POOL["services"] = services
    await run_in_threadpool(services.open)
    app.state.services = services
    yield
    services.close()


OPEN_WARNING = (
    "NO API KEY IS CONFIGURED: anyone who reaches this service can inspect, read the log and change categories; "
    "set INSPECT_API_KEYS (python -m ingest new-key)"
)
_POOL: dict = {"stats": dict, "standbys": lambda: ([], 0)}
observability.REGISTRY.register(observability.PoolCollector(lambda: _POOL["stats"]()))
observability.REGISTRY.register(observability.StandbyCollector(lambda: _POOL["standbys"]()))
observability.REGISTRY.register(observability.DriftCollector(lambda: _loaded_drift()))


@lru_cache
def _keys() -> Keys:
    return Keys(parse_keys(get_settings().api_keys))


@lru_cache
def _rate_limit() -> RateLimit | None:
    per_minute = get_settings().rate_limit_per_minute
    return RateLimit(per_minute) if per_minute else None


app = FastAPI(
    title="PatchCore inspection service",
    description="Anomaly detection for industrial parts: PatchCore with its memory bank in PostgreSQL/pgvector.",
    version="0.1.0",
    lifespan=lifespan,
)


def _error(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": code, "detail": detail})


@app.exception_handler(DatabaseUnavailable)
async def _database_down(_: Request, exc: DatabaseUnavailable) -> JSONResponse:
    return _error(503, "database_unavailable", f"the database does not answer ({exc}); retry shortly")


@app.exception_handler(RecordRefused)
async def _record_refused(_: Request, exc: RecordRefused) -> JSONResponse:
    observability.REFUSED_UNRECORDED.inc()
    return _error(503, "not_recorded", f"the inspection log could not take the record ({exc}), so no verdict is "
                  "given (INSPECT_LOG_POLICY=refuse); retry shortly")  # fmt: skip


@app.exception_handler(UnknownCategory)
async def _unknown_category(_: Request, exc: UnknownCategory) -> JSONResponse:
    return _error(404, "unknown_category", f"no fitted model for category {exc}; see GET /categories")


@app.exception_handler(versions.VersionConflict)
async def _conflict(_: Request, exc: versions.VersionConflict) -> JSONResponse:
    return _error(409, "version_conflict", f"{exc}; read the category again and retry")


@app.exception_handler(NeedsRefit)
async def _needs_refit(_: Request, exc: NeedsRefit) -> JSONResponse:
    return _error(409, "needs_refit", str(exc))


@app.exception_handler(ImageTooLargeError)
async def _too_many_pixels(_: Request, exc: ImageTooLargeError) -> JSONResponse:
    return _error(413, "image_too_large", str(exc))


@app.exception_handler(ImageShapeError)
async def _bad_shape(_: Request, exc: ImageShapeError) -> JSONResponse:
    return _error(422, "unsupported_image_shape", str(exc))


@app.exception_handler(ImageError)
async def _bad_image(_: Request, exc: ImageError) -> JSONResponse:
    return _error(415, "unsupported_image", str(exc))


@app.exception_handler(WeightsError)
async def _weights(_: Request, exc: WeightsError) -> JSONResponse:
    return _error(503, "weights_unavailable", str(exc))


@app.exception_handler(StarletteHTTPException)
async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if isinstance(exc.detail, dict):
        return JSONResponse(status_code=exc.status_code, content=exc.detail)
    if exc.status_code == 400:  # the form parser's own words for a body it cannot read
        kind = request.headers.get("content-type", "none")
        return _error(
            400, "invalid_body", f"the body is not a readable multipart/form-data upload ({exc.detail}; type {kind})"
        )
    return _error(exc.status_code, "http_error", str(exc.detail))


@app.exception_handler(RequestValidationError)
async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg')}" for e in exc.errors()
    )
    return _error(422, "invalid_request", problems)


app.include_router(jobs_routes.router)
app.add_middleware(BodyLimit, limit=lambda: get_settings().max_upload_bytes)
app.add_middleware(
    Guard, keys=_keys, rate_limit=_rate_limit, refused=lambda reason: observability.REFUSED.labels(reason).inc()
)
app.add_middleware(observability.Observe)  # outermost: every answer, refusals included, gets its id and log line


@app.post("/query", response_model=QueryResponse, responses=ERRORS, summary="Inspect one image")
async def query(
    request: Request,
    response: Response,
    file: Annotated[UploadFile, File(description="PNG, JPEG, BMP or TIFF; grayscale, RGB, RGBA or 16-bit")],
    category: Annotated[str, Form(description="the product category, as ingested", **CATEGORY)],
    top_k: Annotated[int, Form(ge=1, le=100, description="how many similar good images to return")] = 10,
    heatmap: Annotated[bool, Form(description="include the anomaly map as a base64 PNG")] = False,
) -> QueryResponse:
    started = time.perf_counter()
    services = get_services(request)
    data = await read_limited(file, services.settings.max_upload_bytes)
    state = request.scope.get("state", {})
    answer = await run_in_threadpool(
        _inspect, services, data, file.filename, category, top_k, heatmap, started,
        state.get("request_id", ""), state.get("api_key"),
    )  # fmt: skip
    if answer.inspection_id is None:
        response.headers["X-Inspection-Logged"] = "false"
    else:
        response.headers["X-Inspection-Id"] = str(answer.inspection_id)
    return answer


def _served(
    services: Services, inspector: Inspector, category: str, image: Image.Image, top_k: int
) -> tuple[Inspector, Inspection]:
    """The image inspected by the category's version; one replaced meanwhile is loaded and asked once more."""
    try:
        return inspector, _searched(services, inspector, image, top_k)
    except ModelReplaced:
        inspector = services.inspector(category, reload=True)
        return inspector, _searched(services, inspector, image, top_k)


def _searched(services: Services, inspector: Inspector, image: Image.Image, top_k: int) -> Inspection:
    """Embedded first, then searched on database connections held for the search only (the embedding is the
    longest stage, and a search a standby could not answer goes to the primary without embedding again)."""
    started = time.perf_counter()
    features = inspector.embed(image)
    embed_ms = (time.perf_counter() - started) * 1000
    inspection = services.run_search(inspector.inspect_features, features, top_k, parts=inspector.search_parts)
    inspection.timings_ms = {"embed": embed_ms, **inspection.timings_ms}
    return inspection


def _inspect(
    services: Services,
    data: bytes,
    name: str | None,
    category: str,
    top_k: int,
    heatmap: bool,
    started: float,
    request_id: str,
    api_key: str | None,
) -> QueryResponse:
    inspector = services.inspector(category)
    preprocess = inspector.embedder.preprocess
    image = open_image(
        data, name=name or "upload", max_pixels=services.settings.max_image_pixels, accept=preprocess.view
    )
    view = preprocess.view(image.width, image.height)
    decoded = time.perf_counter()
    inspector, inspection = _served(services, inspector, category, image, top_k)
    model = inspector.model
    stride = inspector.embedder.extractor.stride
    worst = inspection.worst
    view_x, view_y = (worst["col"] + 0.5) * stride, (worst["row"] + 0.5) * stride
    x, y = view.to_original(view_x, view_y)
    timings = {"decode": (decoded - started) * 1000, **inspection.timings_ms}
    encoded = None
    if heatmap:
        before = time.perf_counter()
        encoded = heatmap_png(inspection.anomaly_map(), inspection.threshold)
        timings["heatmap"] = (time.perf_counter() - before) * 1000
    timings["total"] = (time.perf_counter() - started) * 1000
    defect_type = inspection.defect.defect_type if inspection.defect else None
    inspection_id = _record(services, logbook.entry(
        request_id, category, model.id, inspection.is_anomalous, inspection.score, inspection.threshold,
        defect_type, data, image, api_key, timings, services.settings.log_images,
    ))  # fmt: skip
    timings["log"] = (time.perf_counter() - started) * 1000 - timings["total"]
    for stage in ("decode", "embed", "search", "rerank", "score", "defects", "log"):
        if stage in timings:
            observability.STAGES.labels(stage).observe(timings[stage] / 1000)
    observability.SEARCHES.labels(inspector.backend, str(inspector.device)).inc()
    observability.VERDICTS.labels(category, "anomalous" if inspection.is_anomalous else "normal").inc()
    if defect_type:
        observability.DEFECT_TYPES.labels(category, defect_type).inc()
    return QueryResponse(
        inspection_id=inspection_id,
        category=category,
        model_id=model.id,
        is_anomalous=inspection.is_anomalous,
        anomaly_score=inspection.score,
        similarity=inspection.similarity,
        threshold=inspection.threshold,
        threshold_similarity=inspection.threshold_similarity,
        metric=model.config.metric,
        similar_normals=inspection.similar,
        most_anomalous_patch=AnomalousPatch(
            row=worst["row"],
            col=worst["col"],
            x=int(x),
            y=int(y),
            view_x=int(view_x),
            view_y=int(view_y),
            distance=worst["distance"],
            nearest_normal=worst["nearest_normal"],
        ),
        anomaly_map=encoded,
        field_of_view=model.config.field_of_view,
        view_width=view.width,
        view_height=view.height,
        view_box=[*view.to_original(0, 0), *view.to_original(view.width, view.height)],
        patch_size=stride,
        search_backend=inspector.backend,
        search_device=str(inspector.device),
        exact_searched_patches=inspection.reranked,
        defect_type=defect_type,
        defect_confidence=inspection.defect.confidence if inspection.defect else None,
        nearest_defects=inspection.defect.nearest if inspection.defect else [],
        timings_ms=timings,
    )


def _record(services: Services, row: inspections.Inspection) -> int | None:
    """Write the inspection record; without one in time, ``INSPECT_LOG_POLICY`` refuses the answer (503), waits, or
    (``answer``) says it was not recorded (``None``, counted). An answer never claims a record it has not got."""
    inspection_id = services.log_writer.write(row)
    if inspection_id is None:
        observability.UNRECORDED.inc()
        log.warning("inspection %s of %s answered but not recorded", row.request_id, row.category)
    return inspection_id


def _active(connection, name: str) -> models.StoredModel:
    """The category's active version, or the 404 that names it."""
    model = models.active_model(connection, name)
    if model is None:
        raise UnknownCategory(name)
    return model


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


@app.get("/categories", response_model=list[CategorySummary], responses=ERRORS, summary="Fitted categories")
def categories(request: Request) -> list[dict]:
    return [_summary(m) for m in get_services(request).run(models.active_models)]


@app.get("/categories/{name}", response_model=CategoryDetail, responses=ERRORS, summary="One category in full")
def category_detail(request: Request, name: Annotated[str, PathParam(**CATEGORY)]) -> dict:
    def read(connection):
        model = _active(connection, name)
        return (
            model,
            images.image_counts(connection, model.bank_segments),
            banks.patch_count(connection, model.bank_segments),
            changes.changes(connection, model.category_id),
            pictures.plot_names(connection, model.fit_id),
            defects.library(connection, model.defect_segments),
        )

    model, counts, patches, log, plots, library = get_services(request).run(read)
    return {
        **_summary(model),
        "settings": model.config.as_dict(),
        "threshold_policy": model.threshold_policy,
        "images": counts,
        "patches": patches,
        "coverage_radius": model.coverage_radius,
        "defect_library": library,
        "evaluation": model.evaluation,
        "timings": model.timings,
        "changes": log,
        "plots": plots,
    }


@app.get(
    "/categories/{name}/plots/{plot}",
    responses={**ERRORS, 200: {"content": {"image/png": {}}, "description": "the plot"}},
    response_class=Response,
    summary="An evaluation plot of the category's fit (roc, scores, heatmaps, example), from the database",
)
def category_plot(
    request: Request, name: Annotated[str, PathParam(**CATEGORY)], plot: Annotated[str, PathParam(**CATEGORY)]
) -> Response:
    def read(connection):
        model = _active(connection, name)
        return pictures.plot(connection, model.fit_id, plot)

    found = get_services(request).run(read)
    if found is None:
        raise HTTPException(404, {"error": "unknown_plot", "detail": f"{name} has no plot {plot}; see its plots"})
    return _image_response(request, found[1], found[0], "no-cache")


@app.get(
    "/categories/{name}/drift",
    response_model=DriftReport,
    responses=ERRORS,
    summary="Is the line drifting: the share of parts the active version flagged recently, against its calibration",
)
def category_drift(request: Request, name: Annotated[str, PathParam(**CATEGORY)]) -> dict:
    return _drift(get_services(request), name)


def _drift(services: Services, name: str, distributions: bool = True) -> dict:
    """The drift report of ``name``; ``distributions``: with the recent and good scores (the page's plot), which the
    metrics scrape does not read."""
    hours = services.settings.drift_hours

    def read(connection):
        model = _active(connection, name)
        hourly = inspections.hourly(connection, model.id, hours)
        if not distributions:
            return model, hourly, {}
        return (
            model,
            hourly,
            {
                "scores": inspections.recent_scores(connection, model.id, hours),
                "good_scores": images.good_scores(connection, model.bank_segments),
            },
        )

    model, hourly, scores = services.run(read)
    report = drift.drift(hourly, model.threshold_policy.get("estimated_false_alarm_rate"), hours)
    return {"category": name, "model_id": model.id, "threshold": model.threshold, **report, **scores}


def _loaded_drift() -> list[dict]:
    """Drift counts of every loaded category, for the metrics scrape: a category no longer fitted is left out, and
    while the database is away the scrape goes on without drift."""
    services = _POOL.get("services")
    reports = []
    for name in services.loaded() if services is not None else []:
        try:
            reports.append(_drift(services, name, distributions=False))
        except UnknownCategory:
            continue
        except DatabaseUnavailable:
            return reports
    return reports


@app.put(
    "/categories/{name}/threshold",
    response_model=ThresholdChange,
    responses=ERRORS,
    summary="Set the threshold by value or false-alarm rate: a new version, no refit",
)
def put_threshold(request: Request, name: Annotated[str, PathParam(**CATEGORY)], body: ThresholdRequest) -> dict:
    actor = actor_of(request)

    def change(connection):
        model = _active(connection, name)
        try:
            version = set_threshold(connection, model, actor, value=body.value, false_alarm_rate=body.false_alarm_rate)
        except ValueError as exc:
            raise HTTPException(422, {"error": "invalid_threshold", "detail": str(exc)}) from exc
        models.retire_old_models(connection, name)
        return model, models.active_model(connection, name), version

    previous, new, version = get_services(request).run(change)
    return {
        "category": name,
        "model_id": version,
        "previous_model_id": previous.id,
        "threshold": new.threshold,
        "previous_threshold": previous.threshold,
        "threshold_policy": new.threshold_policy,
    }


def _teach(services: Services, name: str, work):
    """``work(connection, inspector)`` on the category's active version as this server has it loaded; a request
    the teaching code refuses (an empty mask, a bad defect type) is a 422 naming it."""
    inspector = services.inspector(name, reload=True)

    def run(connection):
        try:
            result = work(connection, inspector)
        except ValueError as exc:
            raise HTTPException(422, {"error": "invalid_request", "detail": str(exc)}) from exc
        models.retire_old_models(connection, name)
        return result

    return services.run(run)


def _add_normals(services: Services, name: str, uploads: list[Upload], recalibrate: bool, actor: str) -> dict:
    def work(connection, inspector):
        added = add_normals(
            connection, inspector.model, inspector.bank, inspector.embedder, uploads, services.settings, actor,
            recalibrate,
        )  # fmt: skip
        return added.as_dict()

    return _teach(services, name, work)


def _add_defects(services: Services, name: str, items: list[DefectUpload], actor: str) -> dict:
    def work(connection, inspector):
        return add_defects(
            connection, inspector.model, inspector.bank, inspector.embedder, items, services.settings, actor
        )

    return _teach(services, name, work)


@app.post(
    "/categories/{name}/normals",
    response_model=NormalsAdded,
    responses=ERRORS,
    summary="Add good images without a refit: a new version whose memory bank grows by what is new",
)
async def post_normals(
    request: Request,
    name: Annotated[str, PathParam(**CATEGORY)],
    files: Annotated[list[UploadFile], File(description="one or more good images of the category")],
    recalibrate: Annotated[
        bool, Form(description="set the threshold again by the category's false-alarm rate, new images included")
    ] = False,
) -> dict:
    services = get_services(request)
    limit = services.settings.max_upload_bytes
    uploads = [
        Upload(f.filename or f"upload {i + 1}", await read_limited(f, limit), f"{actor_of(request)}: {f.filename}")
        for i, f in enumerate(files)
    ]
    return await run_in_threadpool(_add_normals, services, name, uploads, recalibrate, actor_of(request))


async def _defect_upload(request: Request, file: UploadFile, defect_type: str, mask: UploadFile | None) -> DefectUpload:
    limit = get_services(request).settings.max_upload_bytes
    name = file.filename or "upload"
    data = await read_limited(file, limit)
    mask_data = await read_limited(mask, limit) if mask is not None and mask.filename else None
    return DefectUpload(Upload(name, data, f"{actor_of(request)}: {name}"), defect_type, mask_data)


@app.post(
    "/categories/{name}/defects",
    response_model=DefectsAdded,
    responses=ERRORS,
    summary="Add a labelled defect example to the category's library: a new version",
)
async def post_defect(
    request: Request,
    name: Annotated[str, PathParam(**CATEGORY)],
    file: Annotated[UploadFile, File(description="the defective part's image")],
    defect_type: Annotated[str, Form(description="its type, e.g. crack or contamination")],
    mask: Annotated[
        UploadFile | None,
        File(description="optional PNG of the image's size, the defect white; without it, the most anomalous patches"),
    ] = None,
) -> dict:
    try:
        check_defect_type(defect_type)
    except ValueError as exc:
        raise HTTPException(422, {"error": "invalid_request", "detail": str(exc)}) from exc
    item = await _defect_upload(request, file, defect_type, mask)
    return await run_in_threadpool(_add_defects, get_services(request), name, [item], actor_of(request))


@app.post(
    "/categories/{name}/feedback",
    response_model=FeedbackResult,
    responses=ERRORS,
    summary="Say what an image really is: good adds it as a normal, a defect type adds it to the library",
)
async def post_feedback(
    request: Request,
    name: Annotated[str, PathParam(**CATEGORY)],
    label: Annotated[str, Form(description="good, or the defect type it shows")],
    file: Annotated[UploadFile | None, File(description="the image that was judged")] = None,
    inspection_id: Annotated[
        int | None, Form(description="instead of the file: the inspection whose image the log kept in full")
    ] = None,
    mask: Annotated[UploadFile | None, File(description="optional defect mask (defect labels only)")] = None,
) -> dict:
    services = get_services(request)
    _check_label(label)
    if (file is None or not file.filename) == (inspection_id is None):
        raise HTTPException(422, {"error": "invalid_request", "detail": "send the image as file, or an inspection_id"})
    if inspection_id is not None:
        judged = await run_in_threadpool(_inspection, request, inspection_id)
        if judged["category"] != name:
            raise HTTPException(422, {"error": "invalid_request", "detail": f"inspection {inspection_id} judged "
                                      f"{judged['category']}, not {name}"})  # fmt: skip
        upload = await run_in_threadpool(_logged_upload, services, inspection_id, actor_of(request))
        mask_data = await read_limited(mask, services.settings.max_upload_bytes) if mask and mask.filename else None
        item = DefectUpload(upload, label, mask_data)
    else:
        item = await _defect_upload(request, file, label, mask)
    if label == "good":
        result = await run_in_threadpool(_add_normals, services, name, [item.upload], False, actor_of(request))
    else:
        result = await run_in_threadpool(_add_defects, services, name, [item], actor_of(request))
    if inspection_id is not None:
        await run_in_threadpool(
            services.run, inspections.review, inspection_id, label, actor_of(request), result["model_id"]
        )
    taught = "normal" if label == "good" else "defect"
    return {"label": label, "taught": taught, "result": result, "reviewed": inspection_id is not None}


def _check_label(label: str) -> None:
    """good, or a defect type the library accepts: anything else is a 422 naming the rule."""
    if label == "good":
        return
    try:
        check_defect_type(label)
    except ValueError as exc:
        raise HTTPException(422, {"error": "invalid_request", "detail": f"label: {exc}"}) from exc


def _logged_upload(services: Services, inspection_id: int, actor: str) -> Upload:
    """The image an inspection kept in full, as an upload to teach with."""
    found = services.run(inspections.image, inspection_id)
    if found is None or found[2] != "full":
        raise HTTPException(
            409, {"error": "image_not_kept", "detail": f"inspection {inspection_id} has no full image to teach with "
                  "(INSPECT_LOG_IMAGES=full keeps them, until INSPECT_LOG_RETENTION_DAYS); send the file instead"},
        )  # fmt: skip
    return Upload(f"inspection-{inspection_id}", found[0], f"{actor}: inspection {inspection_id}")


@app.get(
    "/defects/{defect_id}",
    responses={**ERRORS, 200: {"content": {"image/jpeg": {}}, "description": "the example as the model saw it"}},
    response_class=Response,
    summary="A known defect example of a library, as the model saw it, from the database",
)
def defect_image(request: Request, defect_id: int) -> Response:
    found = get_services(request).run(defects.example_view, defect_id)
    if found is None:
        raise HTTPException(404, {"error": "unknown_defect", "detail": f"no stored defect example {defect_id}"})
    return _image_response(request, found[0], "image/jpeg")


IMMUTABLE = "public, max-age=31536000, immutable"  # a stored image never changes: a new fit stores new ids


def _stored_view(request: Request, image_id: int) -> pictures.StoredView:
    view = get_services(request).run(pictures.image_view, image_id)
    if view is None:
        raise HTTPException(
            404, {"error": "unknown_image", "detail": f"no stored image {image_id}; image ids come from /query answers"}
        )
    return view


def _image_response(request: Request, data: bytes, media_type: str, cache: str = IMMUTABLE) -> Response:
    etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
    headers = {"Cache-Control": cache, "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=media_type, headers=headers)


@app.get(
    "/images/{image_id}",
    responses={**ERRORS, 200: {"content": {"image/jpeg": {}}, "description": "the image as the model saw it"}},
    response_class=Response,
    summary="A stored good image, as the model saw it (its view), from the database",
)
def image(request: Request, image_id: int) -> Response:
    view = _stored_view(request, image_id)
    return _image_response(request, view.data, view.media_type)


@app.get(
    "/images/{image_id}/patch",
    responses={**ERRORS, 200: {"content": {"image/png": {}}, "description": "the patch's neighbourhood"}},
    response_class=Response,
    summary="The square of a stored image around one patch of its grid (row, col as /query names them)",
)
def image_patch(
    request: Request,
    image_id: int,
    row: Annotated[int, Query(ge=0, description="patch grid row")],
    col: Annotated[int, Query(ge=0, description="patch grid column")],
    size: Annotated[int, Query(ge=8, le=512, description="side of the square in view pixels")] = 64,
) -> Response:
    view = _stored_view(request, image_id)
    stride = STRIDES[view.first_layer]
    rows, cols = view.height // stride, view.width // stride
    if row >= rows or col >= cols:
        raise HTTPException(
            422, {"error": "invalid_request", "detail": f"row {row}, col {col} is outside the {rows}x{cols} patch grid"}
        )
    centre_x, centre_y = (col + 0.5) * stride, (row + 0.5) * stride
    left = int(min(max(centre_x - size / 2, 0), max(view.width - size, 0)))
    top = int(min(max(centre_y - size / 2, 0), max(view.height - size, 0)))
    crop = Image.open(io.BytesIO(view.data)).crop((left, top, left + size, top + size))
    buffer = io.BytesIO()
    crop.save(buffer, format="PNG")
    return _image_response(request, buffer.getvalue(), "image/png")


PAGES = Path(__file__).parent / "static"


@app.get("/", response_class=HTMLResponse, summary="The inspect page: a person's view of POST /query")
def inspect_page() -> HTMLResponse:
    """Plain HTML and JavaScript, no asset from elsewhere (an offline factory network is enough); it calls the
    same endpoints as any client."""
    return HTMLResponse((PAGES / "inspect.html").read_text(encoding="utf-8"))


app.mount("/static", StaticFiles(directory=PAGES), name="static")


@app.get("/category", response_class=HTMLResponse, summary="The category page (?name=...): what a category knows")
def category_page() -> HTMLResponse:
    return HTMLResponse((PAGES / "category.html").read_text(encoding="utf-8"))


@app.get("/review", response_class=HTMLResponse, summary="The review page: the log with thumbnails, confirm or correct")
def review_page() -> HTMLResponse:
    return HTMLResponse((PAGES / "review.html").read_text(encoding="utf-8"))


@app.get("/new", response_class=HTMLResponse, summary="The new product page: upload good images, fit by a worker")
def new_product_page() -> HTMLResponse:
    return HTMLResponse((PAGES / "new.html").read_text(encoding="utf-8"))


@app.get("/health", response_model=Health, summary="The process answers; says whether API keys are required")
def health() -> dict:
    if _keys().keys:
        return {"status": "ok", "auth": "keys"}
    return {"status": "ok", "auth": "open", "warning": OPEN_WARNING}


@app.get("/metrics", response_class=Response, summary="Prometheus metrics (text format)")
def metrics(request: Request) -> Response:
    observability.MODELS_LOADED.set(len(get_services(request).loaded()))
    return Response(generate_latest(observability.REGISTRY), media_type=CONTENT_TYPE_LATEST)


def _with_image_url(record: dict) -> dict:
    return {**record, "image_url": f"/inspections/{record['id']}/image" if record["image_kept"] else None}


@app.get("/inspections", response_model=InspectionPage, responses=ERRORS, summary="The inspection log, newest first")
def list_inspections(
    request: Request,
    category: Annotated[str | None, Query(**CATEGORY)] = None,
    verdict: Annotated[Literal["defect", "normal"] | None, Query(description="defect or normal")] = None,
    since: Annotated[datetime | None, Query(description="from this time on (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="before this time (ISO 8601)")] = None,
    model_id: Annotated[int | None, Query(description="judged by this version")] = None,
    before: Annotated[int | None, Query(description="older than this inspection id: next_before of a page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    reviewed: Annotated[bool | None, Query(description="false: not yet reviewed; true: reviewed")] = None,
) -> dict:
    anomalous = None if verdict is None else verdict == "defect"
    rows = get_services(request).run(
        inspections.listed, category, anomalous, since, until, model_id, before, limit, reviewed
    )
    return {
        "inspections": [_with_image_url(r) for r in rows],
        "next_before": rows[-1]["id"] if len(rows) == limit else None,
    }


def _inspection(request: Request, inspection_id: int) -> dict:
    record = get_services(request).run(inspections.one, inspection_id)
    if record is None:
        raise HTTPException(404, {"error": "unknown_inspection", "detail": f"no inspection {inspection_id}"})
    return record


@app.get("/inspections/{inspection_id}", response_model=InspectionRecord, responses=ERRORS, summary="One inspection")
def get_inspection(request: Request, inspection_id: int) -> dict:
    return _with_image_url(_inspection(request, inspection_id))


@app.get(
    "/inspections/{inspection_id}/image",
    responses={**ERRORS, 200: {"content": {"image/jpeg": {}, "image/png": {}}, "description": "the kept image"}},
    response_class=Response,
    summary="The image an inspection kept (a thumbnail or the file, per INSPECT_LOG_IMAGES), until its retention ends",
)
def inspection_image(request: Request, inspection_id: int) -> Response:
    found = get_services(request).run(inspections.image, inspection_id)
    if found is None:
        _inspection(request, inspection_id)
        raise HTTPException(
            404, {"error": "image_not_kept", "detail": f"inspection {inspection_id} keeps no image (INSPECT_LOG_IMAGES "
                  "was none, or its retention period is over)"},
        )  # fmt: skip
    return _image_response(request, found[0], found[1])


@app.post(
    "/inspections/{inspection_id}/review",
    response_model=InspectionRecord,
    responses=ERRORS,
    summary="Record what an inspected part really was (good, or a defect type), without teaching the category",
)
def review_inspection(request: Request, inspection_id: int, body: ReviewRequest) -> dict:
    """For a verdict that was right, or a part whose image the log did not keep in full; to teach the category as
    well, send the label to ``POST /categories/{name}/feedback`` with the inspection_id (it records the review)."""
    _check_label(body.label)
    record = get_services(request).run(inspections.review, inspection_id, body.label, actor_of(request), None)
    if record is None:
        _inspection(request, inspection_id)
    return _with_image_url(record)


@app.get(
    "/inspections/{inspection_id}/heatmap",
    responses={**ERRORS, 200: {"content": {"image/png": {}}, "description": "the heatmap over the model's view"}},
    response_class=Response,
    summary="The kept image judged again by the category's active version: its heatmap over the model's view",
)
def inspection_heatmap(request: Request, inspection_id: int) -> Response:
    """Not recorded in the log. From a thumbnail the map is close to the original's (the view the model sees is
    about as small); headers say which version drew it and its score."""
    services = get_services(request)
    record = _inspection(request, inspection_id)
    found = services.run(inspections.image, inspection_id)
    if found is None:
        raise HTTPException(404, {"error": "image_not_kept", "detail": f"inspection {inspection_id} keeps no image"})
    image = open_image(found[0], name=f"inspection {inspection_id}", max_pixels=services.settings.max_image_pixels)
    inspector, inspection = _served(services, services.inspector(record["category"]), record["category"], image, 1)
    drawn = overlay(inspector.embedder.preprocess.cropped(image), inspection.anomaly_map(), inspection.threshold)
    buffer = io.BytesIO()
    drawn.save(buffer, format="PNG")
    headers = {"X-Model-Id": str(inspector.model.id), "X-Anomaly-Score": f"{inspection.score:.4f}",
               "Cache-Control": "no-store"}  # fmt: skip
    return Response(buffer.getvalue(), media_type="image/png", headers=headers)


@app.get(
    "/ready",
    response_model=Ready,
    responses={503: {"model": Ready}},
    summary="A category loaded, and the database (or a standby in rotation) answering",
)
def ready(request: Request) -> JSONResponse:
    services = get_services(request)
    try:
        names = [m.category for m in services.run(models.active_models)]
        database = True
    except DatabaseUnavailable:
        names, database = services.loaded(), False
    standbys = services.standbys.describe()[0]
    # with the primary down, standbys in rotation still answer the loaded categories (answers say "not recorded")
    ok = bool(names) and (database or any(s["in_rotation"] for s in standbys))
    body = {"status": "ready" if ok else "not_ready", "database": database, "categories": names,
            "standbys": standbys}  # fmt: skip
    return JSONResponse(status_code=200 if ok else 503, content=body)
