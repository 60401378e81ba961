"""Teaching a fitted category without a refit: good images added, known defects added, feedback on a judged image."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi import Path as PathParam
from starlette.concurrency import run_in_threadpool

from app.common import CATEGORY, ERRORS, actor_of, check_label, get_services, inspection_or_404, read_limited
from app.schemas.teaching import DefectsAdded, FeedbackResult, NormalsAdded
from app.services import Services
from revisions.defects import DefectUpload, add_defects, check_defect_type
from revisions.normals import add_normals
from revisions.uploads import Upload
from store import inspections, models

router = APIRouter(tags=["teaching"])


def _teach(services: Services, name: str, work):
    """``work(connection, inspector)`` on the category's active version as this server has it loaded; a request
    the teaching code refuses (an empty mask, a bad defect type) is a 422 naming it."""
    inspector = services.inspector(name, reload=True)

    def run(connection):
        try:
            result = work(connection, inspector)
        except ValueError as exc:
            raise HTTPException(422, {"error": "invalid_request", "detail": str(exc)}) from exc
        models.retire_old_models(connection, name, services.settings.fits_kept)
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


@router.post(
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


@router.post(
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


@router.post(
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
    check_label(label)
    if (file is None or not file.filename) == (inspection_id is None):
        raise HTTPException(422, {"error": "invalid_request", "detail": "send the image as file, or an inspection_id"})
    if inspection_id is not None:
        judged = await run_in_threadpool(inspection_or_404, request, inspection_id)
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


def _logged_upload(services: Services, inspection_id: int, actor: str) -> Upload:
    """The image an inspection kept in full, as an upload to teach with."""
    found = services.run(inspections.image, inspection_id)
    if found is None or found[2] != "full":
        raise HTTPException(
            409, {"error": "image_not_kept", "detail": f"inspection {inspection_id} has no full image to teach with "
                  "(INSPECT_LOG_IMAGES=full keeps them, until INSPECT_LOG_RETENTION_DAYS); send the file instead"},
        )  # fmt: skip
    return Upload(f"inspection-{inspection_id}", found[0], f"{actor}: inspection {inspection_id}")
