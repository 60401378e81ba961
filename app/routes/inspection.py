"""``POST /query`` and ``POST /query/batch``: images judged, each recorded in the inspection log before the answer
leaves."""

from __future__ import annotations

import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import Response
from PIL import Image
from starlette.concurrency import run_in_threadpool

from app import observability
from app.common import CATEGORY, ERRORS, PART, charge, get_services, read_limited
from app.inspecting import served_all
from app.schemas.errors import Error
from app.schemas.inspection import AnomalousPatch, BatchPart, DefectRegion, QueryBatchResponse, QueryResponse
from app.services import Services
from patchcore.threshold import part_p_value
from patchcore.views import colouring
from serving import logbook
from serving.heatmap import heatmap_png
from serving.inspector import Inspection, Inspector
from store import inspections

log = logging.getLogger("app")
# a batch's images decoded side by side (Pillow's decoders and resizes let go of the GIL): at most this many of them
# decoded at once in the process, whatever the batches, so batches of large images stay bounded in memory. Only
# Pillow runs here, no torch: a thread that runs a torch operation gets OpenMP threads of its own, and with more
# OpenMP threads than cores GNU OpenMP spins far less before sleeping between parallel regions, which made each small
# product of the clustered search (patchcore/clustered.py) three times slower for as long as these threads lived
_DECODING = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="decode")
PART_RULE = re.compile(PART["pattern"])

router = APIRouter(tags=["inspection"])


@router.post("/query", response_model=QueryResponse, responses=ERRORS, summary="Inspect one image")
async def query(
    request: Request,
    response: Response,
    file: Annotated[UploadFile, File(description="PNG, JPEG, BMP, TIFF, WebP or Netpbm; gray, RGB, RGBA or 16-bit")],
    category: Annotated[str, Form(description="the product category, as ingested", **CATEGORY)],
    top_k: Annotated[int, Form(ge=1, le=100, description="how many similar good images to return")] = 10,
    heatmap: Annotated[bool, Form(description="include the anomaly map as a base64 PNG")] = False,
    part: Annotated[str | None, Form(**PART)] = None,
) -> QueryResponse:
    started = time.perf_counter()
    services = get_services(request)
    data = await read_limited(file, services.settings.max_upload_bytes)
    state = request.scope.get("state", {})
    (answer,), _ = await run_in_threadpool(
        _inspect_all, services, [data], [file.filename], [part], category, top_k, heatmap, started,
        state.get("request_id", ""), state.get("api_key"),
    )  # fmt: skip
    if answer.inspection_id is None:
        response.headers["X-Inspection-Logged"] = "false"
    else:
        response.headers["X-Inspection-Id"] = str(answer.inspection_id)
    return answer


@router.post(
    "/query/batch",
    response_model=QueryBatchResponse,
    responses={**ERRORS, 429: {"model": Error, "description": "past the rate limit (each image counts)"}},
    summary="Inspect several images of one category in one request: a part's views, or a tray of parts",
)
async def query_batch(
    request: Request,
    response: Response,
    file: Annotated[
        list[UploadFile], File(description="the images, as POST /query takes one; at most INSPECT_QUERY_BATCH_FILES")
    ],
    category: Annotated[str, Form(description="the product category, as ingested", **CATEGORY)],
    top_k: Annotated[int, Form(ge=1, le=100, description="how many similar good images to return")] = 10,
    heatmap: Annotated[bool, Form(description="include each anomaly map as a base64 PNG")] = False,
    part: Annotated[
        list[str] | None,
        Form(
            description="the part each image shows: once for all of them (a part's views), or once per file, in "
            "their order; omitted: not named"
        ),
    ] = None,
) -> QueryBatchResponse:
    """Each image is judged and recorded exactly as ``POST /query`` judges one, its views embedded together; the
    records are written in one transaction, so the request is answered and recorded whole or refused whole. A file
    that is not a readable image refuses the request before anything is judged (415, naming it)."""
    started = time.perf_counter()
    services = get_services(request)
    limit = services.settings.query_batch_files
    if len(file) > limit:
        detail = f"{len(file)} files; at most {limit} (INSPECT_QUERY_BATCH_FILES)"
        raise HTTPException(422, {"error": "too_many_files", "detail": detail})
    parts = _batch_parts(part or [], len(file))
    charge(request, len(file) - 1)
    data = [await read_limited(upload, services.settings.max_upload_bytes) for upload in file]
    state = request.scope.get("state", {})
    read_ms = _ms(started)
    answers, decode_ms = await run_in_threadpool(
        _inspect_all, services, data, [upload.filename for upload in file], parts, category, top_k, heatmap, started,
        state.get("request_id", ""), state.get("api_key"),
    )  # fmt: skip
    if answers[0].inspection_id is None:
        response.headers["X-Inspection-Logged"] = "false"
    return QueryBatchResponse(
        answers=answers,
        parts=_part_verdicts(answers),
        timings_ms={"read": read_ms, "decode": decode_ms, "log": answers[0].timings_ms["log"], "total": _ms(started)},
    )


def _batch_parts(named: list[str], files: int) -> list[str | None]:
    """The part of each file: none named, one for all, or one each (an empty value names nothing, as on ``POST
    /query``); any other count, or a name the log cannot keep (over 200 characters, control characters), is refused
    (422) before any image is decoded."""
    if len(named) not in (0, 1, files):
        raise HTTPException(422, {"error": "invalid_request", "detail": (
            f"part: {len(named)} values for {files} files; give one for all of them or one per file"
        )})  # fmt: skip
    for name in named:
        if name and (not PART_RULE.fullmatch(name) or len(name) > PART["max_length"]):
            raise HTTPException(422, {"error": "invalid_request", "detail": (
                f"part: {name[:40]!r} is not a part name (1 to {PART['max_length']} printable characters)"
            )})  # fmt: skip
    each = named * files if len(named) == 1 else named or [""] * files
    return [name or None for name in each]


def _part_verdicts(answers: list[QueryResponse]) -> list[BatchPart]:
    """Each named part's verdict over its views in this request: anomalous if any view is, and its p-value by the
    union bound (:func:`patchcore.threshold.part_p_value`, as the log's parts are judged)."""
    views: dict[str, list[QueryResponse]] = {}
    for answer in answers:
        if answer.part is not None:
            views.setdefault(answer.part, []).append(answer)
    verdicts = []
    for name, judged in views.items():
        rated = [answer.p_value for answer in judged if answer.p_value is not None]
        anomalous = sum(answer.is_anomalous for answer in judged)
        verdicts.append(BatchPart(
            part=name, views=len(judged), anomalous_views=anomalous, is_anomalous=anomalous > 0,
            p_value=part_p_value(len(judged), min(rated) if len(rated) == len(judged) else None),
        ))  # fmt: skip
    return verdicts


def _ms(since: float) -> float:
    """Milliseconds since ``since`` (a ``time.perf_counter()`` reading): every timing an answer gives."""
    return (time.perf_counter() - since) * 1000


def _inspect_all(
    services: Services,
    data: list[bytes],
    names: list[str | None],
    parts: list[str | None],
    category: str,
    top_k: int,
    heatmap: bool,
    started: float,
    request_id: str,
    api_key: str | None,
) -> tuple[list[QueryResponse], float]:
    """The images of one request judged (:func:`~app.inspecting.served_all`), answered, recorded in one transaction
    and counted: ``POST /query``'s one image, or a batch's, decoded side by side; with the milliseconds their
    decoding took in all."""
    inspector = services.inspector(category)
    before = time.perf_counter()
    decoding = map if len(data) == 1 else _DECODING.map  # one image in the request's own thread
    uploads = list(decoding(
        lambda index, content, name, part: _received(services, inspector, content, name, part, index),
        range(1, len(data) + 1), data, names, parts,
    ))  # fmt: skip
    decode_ms = _ms(before)

    def image_for(judge: Inspector, index: int) -> Image.Image:  # decoded again for a version that replaced one
        upload = uploads[index]
        return judge.embedder.preprocess.decode(upload.data, upload.label, services.settings.max_image_pixels)

    views = [inspector.embedder.preprocess.normalised(upload.view) for upload in uploads]  # torch: this thread's
    judged = served_all(services, inspector, category, views, image_for, top_k)
    built = [
        _answer(judge, inspection, upload, category, heatmap, started, request_id, api_key)
        for (judge, inspection), upload in zip(judged, uploads, strict=True)
    ]
    answers = [answer for answer, _ in built]
    for answer, inspection_id in zip(answers, _record(services, [row for _, row in built], answers), strict=True):
        answer.inspection_id = inspection_id
    for (judge, inspection), answer in zip(judged, answers, strict=True):
        _observe(judge, inspection, answer)
    return answers, decode_ms


@dataclass
class _Upload:
    """One image of a request as the service received it: its bytes, what the log keeps of it, the part it shows, and
    its view as the category's network sees it (made as it is decoded, so the decoded image is let go at once;
    normalised into the network's tensor by the request's thread)."""

    data: bytes
    label: str
    received: logbook.Received
    part: str | None
    decode_ms: float
    view: Image.Image
    colour: str  # grey, neutral or colour (patchcore.views.colouring): a note where the category's images differ


def _received(
    services: Services, inspector: Inspector, data: bytes, name: str | None, part: str | None, index: int
) -> _Upload:
    """An upload decoded (refused, naming it, where it is not an image the service reads), its view made and what the
    log keeps of it taken; the ``decode`` stage is all three."""
    before = time.perf_counter()
    label = name or f"upload {index}"
    image = inspector.embedder.preprocess.decode(data, label, services.settings.max_image_pixels)
    view = inspector.embedder.preprocess.cropped(image)
    received = logbook.received(data, image, services.settings.log_images, name)
    return _Upload(data, label, received, part, _ms(before), view, colouring(image, view))


def _answer(
    inspector: Inspector,
    inspection: Inspection,
    upload: _Upload,
    category: str,
    heatmap: bool,
    started: float,
    request_id: str,
    api_key: str | None,
) -> tuple[QueryResponse, inspections.Inspection]:
    """The answer for one inspected image (its record id still to come) and the record the log keeps of it."""
    model = inspector.model
    size = (upload.received.width, upload.received.height)
    view = inspector.embedder.preprocess.view(*size)
    worst = inspection.worst
    view_x, view_y = inspection.worst_spot()
    x, y = view.to_original(view_x, view_y)
    timings = {"decode": upload.decode_ms, **inspection.timings_ms}
    encoded = None
    if heatmap:
        before = time.perf_counter()
        encoded = heatmap_png(inspection.anomaly_map(), inspection.threshold)
        timings["heatmap"] = _ms(before)
    stride = inspector.embedder.extractor.stride
    regions = [DefectRegion(**region.placed(view, stride, size)) for region in inspection.regions]
    notes = inspector.notes(inspection, view, size, upload.colour)
    timings["total"] = _ms(started)
    defect_type = inspection.defect.defect_type if inspection.defect else None
    row = logbook.entry(
        request_id, category, model.id, inspection.is_anomalous, inspection.score, inspection.threshold,
        defect_type, upload.received, api_key, timings, [region.model_dump() for region in regions], upload.part,
        inspection.p_value, inspection.patch_scores.numpy(), notes,
    )  # fmt: skip
    answer = QueryResponse(
        inspection_id=None,
        category=category,
        part=upload.part,
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
        search_backend=inspection.backend,
        search_device=str(inspector.device),
        exact_searched_patches=inspection.reranked,
        defect_regions=regions,
        defect_type=defect_type,
        defect_confidence=inspection.defect.confidence if inspection.defect else None,
        nearest_defects=inspection.defect.nearest if inspection.defect else [],
        notes=notes,
        timings_ms=timings,
    )
    return answer, row


def _observe(inspector: Inspector, inspection: Inspection, answer: QueryResponse) -> None:
    """An answer given, in the metrics (stages, search, verdict, defect type), and a warning where its re-rank was
    capped."""
    category, defect_type = answer.category, answer.defect_type
    for stage in ("decode", "embed", "search", "rerank", "score", "defects", "log"):
        if stage in answer.timings_ms:
            observability.STAGES.labels(stage).observe(answer.timings_ms[stage] / 1000)
    observability.SEARCHES.labels(inspection.backend, str(inspector.device)).inc()
    if not inspection.exact_worst:
        observability.RERANK_CAPPED.labels(category).inc()
        log.warning("%s: the re-rank stopped at its cap of %s patches; the score may be too large",
                    category, inspection.reranked)  # fmt: skip
    observability.VERDICTS.labels(category, "anomalous" if inspection.is_anomalous else "normal").inc()
    if defect_type:
        observability.DEFECT_TYPES.labels(category, defect_type).inc()


def _record(services: Services, rows: list[inspections.Inspection], answers: list[QueryResponse]) -> list[int | None]:
    """Write the answers' records in one transaction (their ``log`` timing is that wait); without them in time,
    ``INSPECT_LOG_POLICY`` refuses the answers (503), waits, or (``answer``) says they were not recorded (``None``,
    counted). An answer never claims a record it has not got."""
    before = time.perf_counter()
    ids = services.log_writer.write_all(rows)
    log_ms = _ms(before)
    for answer in answers:
        answer.timings_ms["log"] = log_ms
    if ids[0] is None:
        observability.UNRECORDED.inc(len(rows))
        log.warning("inspection %s of %s answered but not recorded", rows[0].request_id, rows[0].category)
    return ids
