"""The inspection log: records newest first with filters (or all of them as CSV), one record, its kept image, its
heatmap, its review; a part's verdict over its views, and the named parts (or all of them as CSV)."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import partial
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response, StreamingResponse
from PIL import Image

from app import log_csv
from app.common import CATEGORY, ERRORS, PART, actor_of, check_label, get_services, image_response, inspection_or_404
from app.inspecting import served
from app.schemas.log import InspectionPage, InspectionRecord, PartPage, PartVerdict, ReviewRequest
from app.services import Services, UnknownCategory
from patchcore.images import original_size
from serving.heatmap import as_answered, overlay
from store import inspections, models

router = APIRouter(tags=["log"])
CSV_PAGE = 1000  # records (or parts) read at a time for a CSV


def _with_urls(record: dict) -> dict:
    """The record with the addresses of its kept image and of its heatmap, where either can be had: a heatmap where
    the answer's distances are kept and the version that answered still is (its view's geometry), or the image is
    kept and the category has a version to judge it again (:func:`inspection_heatmap`)."""
    return {
        **{key: value for key, value in record.items() if key != "heatmap_drawable"},
        "image_url": f"/inspections/{record['id']}/image" if record["image_kept"] else None,
        "heatmap_url": f"/inspections/{record['id']}/heatmap" if record["heatmap_drawable"] else None,
    }


Verdict = Literal["defect", "normal"]
CategoryFilter = Annotated[str | None, Query(**CATEGORY)]
Since = Annotated[datetime | None, Query(description="from this time on (ISO 8601)")]
Until = Annotated[datetime | None, Query(description="before this time (ISO 8601)")]


def _defect(verdict: Verdict | None) -> bool | None:
    return None if verdict is None else verdict == "defect"


def _filters(
    category: CategoryFilter = None,
    verdict: Annotated[Verdict | None, Query(description="the service's verdict: defect or normal")] = None,
    since: Since = None,
    until: Until = None,
    model_id: Annotated[int | None, Query(description="judged by this version")] = None,
    reviewed: Annotated[bool | None, Query(description="false: not yet reviewed; true: reviewed")] = None,
    part: Annotated[str | None, Query(**{**PART, "description": "the views of this part"})] = None,
    verdict_as_reviewed: Annotated[
        Verdict | None,
        Query(description="defect or normal as reviewed: what a person said where one reviewed, else the service"),
    ] = None,
) -> dict:
    """The log's filters, the same for a page of it and for its CSV: keyword arguments of ``inspections.listed``.
    ``verdict=normal&verdict_as_reviewed=defect`` lists the defects the service missed that a review found."""
    return {"category": category, "is_anomalous": _defect(verdict), "since": since, "until": until,
            "model_id": model_id, "reviewed": reviewed, "part": part,
            "defective_as_reviewed": _defect(verdict_as_reviewed)}  # fmt: skip


Filters = Annotated[dict, Depends(_filters)]


def _part_filters(
    category: CategoryFilter = None,
    verdict: Annotated[Verdict | None, Query(description="defect: flagged on any view")] = None,
    since: Since = None,
    until: Until = None,
    verdict_as_reviewed: Annotated[
        Verdict | None,
        Query(description="defect: defective on any view as reviewed (what a person said, else the service)"),
    ] = None,
) -> dict:
    """The filters of a list of parts (over their views within ``since`` and ``until``), the same for a page and for
    its CSV: keyword arguments of ``inspections.parts_listed``."""
    return {"category": category, "is_anomalous": _defect(verdict), "since": since, "until": until,
            "defective_as_reviewed": _defect(verdict_as_reviewed)}  # fmt: skip


PartFilters = Annotated[dict, Depends(_part_filters)]


def _streamed_csv(
    page: Callable[[int | None], list[dict]], key: str, header: str, lines: Callable[[list[dict]], str], name: str
) -> StreamingResponse:
    """Every row ``page(before)`` gives, page after page (each below the last one's ``key``), as a CSV file sent while
    it is read. The first page is read before the answer starts: a database that does not answer is a 503, not an
    empty file; one lost later breaks the transfer, which a client sees as an incomplete download, never as a shorter
    file."""
    first = page(None)

    def chunks() -> Iterator[str]:
        yield header
        rows = first
        while rows:
            yield lines(rows)
            rows = page(rows[-1][key]) if len(rows) == CSV_PAGE else []

    headers = {"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"}
    return StreamingResponse(chunks(), media_type="text/csv; charset=utf-8", headers=headers)


@router.get("/inspections", response_model=InspectionPage, responses=ERRORS, summary="The inspection log, newest first")
def list_inspections(
    request: Request,
    filters: Filters,
    before: Annotated[int | None, Query(description="older than this inspection id: next_before of a page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict:
    rows = get_services(request).run(partial(inspections.listed, before_id=before, limit=limit, **filters))
    return {
        "inspections": [_with_urls(r) for r in rows],
        "next_before": rows[-1]["id"] if len(rows) == limit else None,
    }


@router.get(
    "/inspections.csv",
    response_class=StreamingResponse,
    responses={**ERRORS, 200: {"content": {"text/csv": {}}, "description": "a line per record, newest first"}},
    summary="The inspection log as CSV for a spreadsheet, with the filters of GET /inspections, every record",
)
def inspections_csv(request: Request, filters: Filters) -> StreamingResponse:
    """Every record the filters select, read in pages of ``CSV_PAGE`` as the file is sent, so a month of a line's
    log streams without being held (:func:`_streamed_csv`). Text a client chose that a spreadsheet would run as a
    formula is marked as text (:mod:`app.log_csv`)."""
    services = get_services(request)

    def page(before: int | None) -> list[dict]:
        return services.run(partial(inspections.listed, before_id=before, limit=CSV_PAGE, **filters))

    return _streamed_csv(page, "id", log_csv.header(), log_csv.lines, "inspections.csv")


@router.get(
    "/parts/{part:path}",
    response_model=PartVerdict,
    responses=ERRORS,
    summary="One part's verdict over its views: anomalous if any view was, with every view's record",
)
def part_verdict(
    request: Request,
    part: Annotated[str, PathParam(**PART)],
    category: Annotated[str | None, Query(**CATEGORY, description="only its views judged in this category")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="at most this many records, newest first")] = 100,
) -> dict:
    """From the inspection log, so it counts the views the line has sent so far: a line decides once the part's
    last view is answered. ``is_anomalous`` is the service's verdict, ``is_defective_as_reviewed`` the one its
    reviews give (each reviewed view as the person said)."""
    found = get_services(request).run(inspections.of_part, part, category, limit)
    if found is None:
        where = "" if category is None else f" in category {category!r}"
        detail = f"no inspection of part {part!r}{where} is logged"
        raise HTTPException(404, {"error": "part_not_found", "detail": detail})
    return {**found, "inspections": [_with_urls(r) for r in found["inspections"]]}


@router.get("/parts", response_model=PartPage, responses=ERRORS, summary="Named parts, the newest view's first")
def list_parts(
    request: Request,
    filters: PartFilters,
    before: Annotated[int | None, Query(description="next_before of a page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict:
    """The parts a line named, each judged over its views in the window as ``GET /parts/{part}`` judges it: the
    day's rejects per part, not per picture (``verdict=defect&since=...``), or once reviewed, the parts that
    were defective (``verdict_as_reviewed=defect``: a flagged view a person found good no longer counts, a missed
    defect a person found does)."""
    rows = get_services(request).run(partial(inspections.parts_listed, before_id=before, limit=limit, **filters))
    return {"parts": rows, "next_before": rows[-1]["last_id"] if len(rows) == limit else None}


@router.get(
    "/parts.csv",
    response_class=StreamingResponse,
    responses={**ERRORS, 200: {"content": {"text/csv": {}}, "description": "a line per part, newest view first"}},
    summary="The named parts as CSV for a spreadsheet, with the filters of GET /parts, every part",
)
def parts_csv(request: Request, filters: PartFilters) -> StreamingResponse:
    """Every part the filters select, each judged over its views in the window, read in pages of ``CSV_PAGE`` as the
    file is sent (:func:`_streamed_csv`): a shift's parts and verdicts for a spreadsheet. A part named like a formula
    is marked as text (:mod:`app.log_csv`)."""
    services = get_services(request)

    def page(before: int | None) -> list[dict]:
        return services.run(partial(inspections.parts_listed, before_id=before, limit=CSV_PAGE, **filters))

    return _streamed_csv(page, "last_id", log_csv.header(log_csv.PART_COLUMNS), log_csv.part_lines, "parts.csv")


@router.get("/inspections/{inspection_id}", response_model=InspectionRecord, responses=ERRORS, summary="One inspection")
def get_inspection(request: Request, inspection_id: int) -> dict:
    return _with_urls(inspection_or_404(request, inspection_id))


@router.get(
    "/inspections/{inspection_id}/image",
    responses={**ERRORS, 200: {"content": {"image/jpeg": {}, "image/png": {}}, "description": "the kept image"}},
    response_class=Response,
    summary="The image an inspection kept (a thumbnail or the file, per INSPECT_LOG_IMAGES), until its retention ends",
)
def inspection_image(request: Request, inspection_id: int) -> Response:
    found = get_services(request).run(inspections.image, inspection_id)
    if found is None:
        inspection_or_404(request, inspection_id)
        raise HTTPException(
            404, {"error": "image_not_kept", "detail": f"inspection {inspection_id} keeps no image (INSPECT_LOG_IMAGES "
                  "was none, or its retention period is over)"},
        )  # fmt: skip
    return image_response(request, found[0], found[1])


@router.post(
    "/inspections/{inspection_id}/review",
    response_model=InspectionRecord,
    responses=ERRORS,
    summary="Record what an inspected part really was (good, or a defect type), without teaching the category",
)
def review_inspection(request: Request, inspection_id: int, body: ReviewRequest) -> dict:
    """For a verdict that was right, or a part whose image the log did not keep in full; to teach the category as
    well, send the label to ``POST /categories/{name}/feedback`` with the inspection_id (it records the review)."""
    check_label(body.label)
    record = get_services(request).run(inspections.review, inspection_id, body.label, actor_of(request), None)
    if record is None:
        inspection_or_404(request, inspection_id)
    return _with_urls(record)


@router.get(
    "/inspections/{inspection_id}/heatmap",
    responses={**ERRORS, 200: {"content": {"image/png": {}}, "description": "the heatmap over the model's view"}},
    response_class=Response,
    summary="The heatmap the answer saw: its own patch distances over the kept image's view, its regions boxed",
)
def inspection_heatmap(request: Request, inspection_id: int) -> Response:
    """Drawn from what the record keeps: the answer's patch distances, threshold and regions over the kept image
    (file or thumbnail) in the view the version that judged it made, so what a reviewer sees is what the line saw,
    whatever version is active now (``X-Heatmap: recorded``); over plain grey where no image is kept (none was, or
    the retention period deleted it): where on the part to look. A record from before the distances were kept, or
    one whose version was retired since, is drawn by judging the kept image again with the category's active
    version (``X-Heatmap: judged-again``; not recorded in the log). ``X-Model-Id`` and ``X-Anomaly-Score``: the
    version that drew it and the score it is coloured by."""
    services = get_services(request)
    record = inspection_or_404(request, inspection_id)
    kept, scores = services.run(inspections.drawn_from, inspection_id)
    label, limit = f"inspection {inspection_id}", services.settings.max_image_pixels
    version = services.run(models.model_by_id, record["model_id"]) if scores is not None else None
    if version is None and kept is None:
        detail = f"inspection {inspection_id} keeps no image, and no patch distances its version can draw"
        raise HTTPException(404, {"error": "image_not_kept", "detail": detail})
    if version is not None:
        image = None if kept is None else version.config.preprocess.decode(kept, label, limit)
        boxes = [region["box_in_view"] for region in record["defect_regions"] or []]
        size = (record["width"], record["height"])
        drawn = as_answered(version.config.preprocess, image, size, scores, record["threshold"], boxes)
        model_id, score, source = record["model_id"], record["score"], "recorded"
    else:
        drawn, model_id, score = _judged_again(services, record, kept, label)
        source = "judged-again"
    buffer = io.BytesIO()
    drawn.save(buffer, format="PNG")
    headers = {"X-Model-Id": str(model_id), "X-Anomaly-Score": f"{score:.4f}", "X-Heatmap": source,
               "Cache-Control": "no-store"}  # fmt: skip
    return Response(buffer.getvalue(), media_type="image/png", headers=headers)


def _judged_again(services: Services, record: dict, kept: bytes, label: str) -> tuple[Image.Image, int, float]:
    """The kept image judged again by the category's active version: its heatmap, the version's id and the score.
    From a thumbnail the map is close to the original's (the view the model sees is about as small)."""
    # measured on bottle's 83 test images (docs/review-and-drift.md): thumbnail against original, map correlation
    # 0.992 (median; 0.930 at worst), score 2.1% apart (median; 18% at worst), no verdict changed
    try:
        inspector = services.inspector(record["category"])
    except UnknownCategory:
        detail = (f"inspection {record['id']} was answered for category {record['category']}, which has no fitted "
                  "version now (deleted since), and its own version is gone or kept no patch distances")  # fmt: skip
        raise HTTPException(404, {"error": "unknown_category", "detail": detail}) from None
    image = inspector.embedder.preprocess.decode(kept, label, services.settings.max_image_pixels)
    inspector, inspection = served(services, inspector, record["category"], image, 1)
    size = original_size(image)
    view, stride = inspector.embedder.preprocess.view(*size), inspector.embedder.extractor.stride
    boxes = [region.placed(view, stride, size)["box_in_view"] for region in inspection.regions]
    drawn = overlay(inspector.embedder.preprocess.cropped(image), inspection.anomaly_map(), inspection.threshold, boxes)
    return drawn, inspector.model.id, inspection.score
