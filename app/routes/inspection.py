"""``POST /query``: one image judged, recorded in the inspection log before the answer leaves."""

from __future__ import annotations

import logging
import time
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from app import observability
from app.common import CATEGORY, ERRORS, PART, get_services, read_limited
from app.inspecting import served
from app.schemas import AnomalousPatch, DefectRegion, QueryResponse
from app.services import Services
from patchcore.images import original_size
from serving import logbook
from serving.heatmap import heatmap_png
from store import inspections

log = logging.getLogger("app")

router = APIRouter(tags=["inspection"])


@router.post("/query", response_model=QueryResponse, responses=ERRORS, summary="Inspect one image")
async def query(
    request: Request,
    response: Response,
    file: Annotated[UploadFile, File(description="PNG, JPEG, BMP, TIFF or WebP; grayscale, RGB, RGBA or 16-bit")],
    category: Annotated[str, Form(description="the product category, as ingested", **CATEGORY)],
    top_k: Annotated[int, Form(ge=1, le=100, description="how many similar good images to return")] = 10,
    heatmap: Annotated[bool, Form(description="include the anomaly map as a base64 PNG")] = False,
    part: Annotated[str | None, Form(**PART)] = None,
) -> QueryResponse:
    started = time.perf_counter()
    services = get_services(request)
    data = await read_limited(file, services.settings.max_upload_bytes)
    state = request.scope.get("state", {})
    answer = await run_in_threadpool(
        _inspect, services, data, file.filename, category, top_k, heatmap, started,
        state.get("request_id", ""), state.get("api_key"), part,
    )  # fmt: skip
    if answer.inspection_id is None:
        response.headers["X-Inspection-Logged"] = "false"
    else:
        response.headers["X-Inspection-Id"] = str(answer.inspection_id)
    return answer


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
    part: str | None,
) -> QueryResponse:
    inspector = services.inspector(category)
    preprocess = inspector.embedder.preprocess
    image = preprocess.decode(data, name or "upload", services.settings.max_image_pixels)
    view = preprocess.view(*original_size(image))
    decoded = time.perf_counter()
    inspector, inspection = served(services, inspector, category, image, top_k)
    model = inspector.model
    worst = inspection.worst
    view_x, view_y = inspection.worst_spot()
    x, y = view.to_original(view_x, view_y)
    timings = {"decode": (decoded - started) * 1000, **inspection.timings_ms}
    encoded = None
    if heatmap:
        before = time.perf_counter()
        encoded = heatmap_png(inspection.anomaly_map(), inspection.threshold)
        timings["heatmap"] = (time.perf_counter() - before) * 1000
    stride, size = inspector.embedder.extractor.stride, original_size(image)
    regions = [DefectRegion(**region.placed(view, stride, size)) for region in inspection.regions]
    timings["total"] = (time.perf_counter() - started) * 1000
    defect_type = inspection.defect.defect_type if inspection.defect else None
    inspection_id = _record(services, logbook.entry(
        request_id, category, model.id, inspection.is_anomalous, inspection.score, inspection.threshold,
        defect_type, data, image, api_key, timings, services.settings.log_images,
        [region.model_dump() for region in regions], part, name, inspection.p_value,
    ))  # fmt: skip
    timings["log"] = (time.perf_counter() - started) * 1000 - timings["total"]
    for stage in ("decode", "embed", "search", "rerank", "score", "defects", "log"):
        if stage in timings:
            observability.STAGES.labels(stage).observe(timings[stage] / 1000)
    observability.SEARCHES.labels(inspector.backend, str(inspector.device)).inc()
    if not inspection.exact_worst:
        observability.RERANK_CAPPED.labels(category).inc()
        log.warning("%s: the re-rank stopped at its cap of %s patches; the score may be too large",
                    category, inspection.reranked)  # fmt: skip
    observability.VERDICTS.labels(category, "anomalous" if inspection.is_anomalous else "normal").inc()
    if defect_type:
        observability.DEFECT_TYPES.labels(category, defect_type).inc()
    return QueryResponse(
        inspection_id=inspection_id,
        category=category,
        part=part,
        model_id=model.id,
        is_anomalous=inspection.is_anomalous,
        anomaly_score=inspection.score,
        p_value=inspection.p_value,
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
        defect_regions=regions,
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
