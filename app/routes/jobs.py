"""Fit jobs over HTTP: a new product from uploaded good images, fitted by a worker process (``python -m ingest
worker``), never by the API; its progress, cancel, retry. The queue itself is :mod:`store.jobs`."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Literal

from fastapi import APIRouter, File, HTTPException, Query, Request, Response, UploadFile
from fastapi import Path as PathParam
from starlette.concurrency import run_in_threadpool

from app.common import CATEGORY, ERRORS, CareMask, active, actor_of, get_services, image_response, read_limited
from app.schemas.jobs import Job, JobImagesAdded, JobParts, JobRequest, RefitRequest
from app.uploads import ArchiveError, job_images
from patchcore.backbone import BACKBONES
from patchcore.care import CareArea
from patchcore.model import PatchCoreConfig
from patchcore.threshold import PER_IMAGE
from patchcore.views import FIELDS_OF_VIEW, Preprocess
from store import images, jobs

router = APIRouter(tags=["jobs"])

JOB_ERRORS = {**ERRORS, 404: {"model": ERRORS[404]["model"], "description": "unknown job"},
              409: {"model": ERRORS[409]["model"], "description": "the job's state does not allow it"}}  # fmt: skip
JOB_ID = {"ge": 1, "description": "the job's id"}


def _run(request: Request, work, *args):
    """``work(connection, *args)``; a job the store does not know is a 404, a state that forbids the action a 409,
    a refused value a 422, each naming the job."""
    try:
        return get_services(request).run(work, *args)
    except jobs.UnknownJob as exc:
        raise HTTPException(404, {"error": "unknown_job", "detail": str(exc)}) from exc
    except jobs.JobStateError as exc:
        raise HTTPException(409, {"error": "job_state", "detail": str(exc)}) from exc
    except jobs.NoStoredImages as exc:
        raise HTTPException(409, {"error": "no_stored_images", "detail": str(exc)}) from exc
    except ValueError as exc:
        raise HTTPException(422, {"error": "invalid_request", "detail": str(exc)}) from exc


def _reaped_then(work):
    """Jobs as they are: any whose worker is gone is marked failed before it is read."""

    def run(connection, *args):
        jobs.reap(connection)
        return work(connection, *args)

    return run


@router.post("/jobs", response_model=Job, status_code=201, responses=JOB_ERRORS, summary="A new product's fit job")
def create_job(request: Request, body: JobRequest) -> dict:
    """A draft job: add its good images with ``POST /jobs/{id}/images`` (as many requests as needed), then
    ``POST /jobs/{id}/start`` queues it for a worker."""
    settings = get_services(request).settings
    config = PatchCoreConfig(backbone=settings.backbone, false_alarm_rate=settings.false_alarm_rate)
    defaults = {**config.as_dict(), "per": PER_IMAGE}
    asked = body.model_dump(exclude={"category"})
    options = {name: defaults[name] if value is None else value for name, value in asked.items()}
    if options["backbone"] not in BACKBONES:
        choices = ", ".join(BACKBONES)
        raise HTTPException(422, {"error": "invalid_request", "detail": f"backbone: choose one of {choices}"})
    if options["field_of_view"] not in FIELDS_OF_VIEW:
        raise HTTPException(422, {"error": "invalid_request", "detail": "field_of_view: whole or crop"})
    try:  # what no fit can take is refused now, not by the worker that takes the job
        PatchCoreConfig(**{name: value for name, value in options.items() if name != "per"})
    except ValueError as exc:
        raise HTTPException(422, {"error": "invalid_request", "detail": str(exc)}) from exc
    return _run(request, jobs.create, body.category, options, actor_of(request))


@router.post(
    "/jobs/{job_id}/images",
    response_model=JobImagesAdded,
    responses=JOB_ERRORS,
    summary="Add good images (files, or zip archives of them) to a draft job",
)
async def add_job_images(
    request: Request,
    job_id: Annotated[int, PathParam(**JOB_ID)],
    files: Annotated[list[UploadFile], File(description="good images, or .zip archives of them")],
) -> dict:
    settings = get_services(request).settings
    limit = settings.max_upload_bytes
    uploads = [(f.filename or f"upload-{i + 1}", await read_limited(f, limit)) for i, f in enumerate(files)]
    view = _fitted_view((await run_in_threadpool(_run, request, jobs.one, job_id))["options"])
    try:
        images, ignored = await run_in_threadpool(
            job_images, uploads, settings.max_image_pixels, limit, 64 * limit, view.view
        )
    except ArchiveError as exc:
        raise HTTPException(422, {"error": "bad_archive", "detail": str(exc)}) from exc
    added = await run_in_threadpool(_run, request, jobs.add_images, job_id, images)
    job = await run_in_threadpool(_run, request, jobs.one, job_id)
    return {"job": job, "added": added.added, "duplicates": added.duplicates, "ignored": ignored}


_VIEW_OPTIONS = ("field_of_view", "resize", "crop", "pixels")


def _fitted_view(options: dict) -> Preprocess:
    """The field of view the job's worker will fit in, from the job's options (the fit's defaults where it names
    none): an image of a shape it refuses (an extreme aspect ratio) is refused at upload, named, rather than by the
    worker's check after the job was queued."""
    named = {name: options[name] for name in _VIEW_OPTIONS if options.get(name) is not None}
    return PatchCoreConfig(**named).preprocess


@router.put(
    "/jobs/{job_id}/parts", response_model=Job, responses=JOB_ERRORS, summary="Name the parts a draft job's images show"
)
def name_job_parts(request: Request, job_id: Annotated[int, PathParam(**JOB_ID)], body: JobParts) -> dict:
    """Which images are views of one part, by name: the worker then holds out and cross-fits whole parts. A pattern
    on the file names is the client's to run (``python -m ingest enqueue --part``, the new product page); the
    service takes only the names it gives."""
    return _run(request, jobs.name_parts, job_id, body.parts)


@router.put(
    "/jobs/{job_id}/care-area",
    response_model=Job,
    responses=JOB_ERRORS,
    summary="Draw a draft job's care area: a mask of where on each picture the part is inspected",
)
async def set_job_care_area(
    request: Request,
    job_id: Annotated[int, PathParam(**JOB_ID)],
    file: CareMask,
) -> dict:
    """What lies beside the part (a fixture, a label, a cable) is then neither learnt nor scored: the patch cells
    outside the mask, stretched over each picture, never enter the memory bank and never decide a score, so they
    neither flag a part nor raise the threshold. Replaces the one drawn before; needs the whole field of view."""
    data = await read_limited(file, get_services(request).settings.max_upload_bytes)
    return await run_in_threadpool(_run, request, _with_care_area, job_id, data, file.filename or "the care area")


@router.get(
    "/jobs/{job_id}/care-area",
    responses={**JOB_ERRORS, 200: {"content": {"image/png": {}}, "description": "the mask: white is inspected"}},
    response_class=Response,
    summary="A job's care area: the mask its worker fits with (kept with the job: an earlier area can be sent again)",
)
def job_care_area(request: Request, job_id: Annotated[int, PathParam(**JOB_ID)]) -> Response:
    png = _run(request, jobs.care_png, job_id)
    if png is None:
        raise HTTPException(
            404, {"error": "no_care_area", "detail": f"job {job_id} fits all of each picture: it has no care area"}
        )
    return image_response(request, png, "image/png", "no-cache")  # a draft's may be drawn again


@router.delete(
    "/jobs/{job_id}/care-area",
    response_model=Job,
    responses=JOB_ERRORS,
    summary="A draft job inspects all of each picture",
)
def clear_job_care_area(request: Request, job_id: Annotated[int, PathParam(**JOB_ID)]) -> dict:
    return _run(request, jobs.set_care_area, job_id, None)


def _with_care_area(connection, job_id: int, data: bytes, name: str) -> dict:
    """The draft job with the mask in ``data``, refused (422) where it is not a mask a fit with its options takes."""
    options = jobs.one(connection, job_id)["options"]
    png = CareArea.read(data, name).png()
    PatchCoreConfig(**{key: value for key, value in options.items() if key != "per"}, care_area=png)
    return jobs.set_care_area(connection, job_id, png)


@router.post("/jobs/{job_id}/start", response_model=Job, responses=JOB_ERRORS, summary="Queue a draft job for a worker")
def start_job(request: Request, job_id: Annotated[int, PathParam(**JOB_ID)]) -> dict:
    return _run(request, jobs.start, job_id)


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=Job,
    responses=JOB_ERRORS,
    summary="Cancel a job: at once before a worker takes it; a running one stops at its next progress report",
)
def cancel_job(request: Request, job_id: Annotated[int, PathParam(**JOB_ID)]) -> dict:
    return _run(request, jobs.cancel, job_id)


@router.post(
    "/jobs/{job_id}/retry", response_model=Job, responses=JOB_ERRORS, summary="Queue a failed or cancelled job again"
)
def retry_job(request: Request, job_id: Annotated[int, PathParam(**JOB_ID)]) -> dict:
    return _run(request, _reaped_then(jobs.retry), job_id)


@router.delete(
    "/jobs/{job_id}", status_code=204, responses=JOB_ERRORS, summary="Remove a job that is not running, with its images"
)
def delete_job(request: Request, job_id: Annotated[int, PathParam(**JOB_ID)]) -> Response:
    _run(request, _reaped_then(jobs.delete), job_id)
    return Response(status_code=204)


@router.get("/jobs", response_model=list[Job], responses=JOB_ERRORS, summary="Fit jobs, newest first")
def list_jobs(
    request: Request,
    category: Annotated[str | None, Query(**CATEGORY)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[dict]:
    return _run(request, _reaped_then(jobs.listed), category, limit)


@router.get("/jobs/{job_id}", response_model=Job, responses=JOB_ERRORS, summary="One fit job and its progress")
def get_job(request: Request, job_id: Annotated[int, PathParam(**JOB_ID)]) -> dict:
    return _run(request, _reaped_then(jobs.one), job_id)


@router.post(
    "/categories/{name}/refit",
    response_model=Job,
    status_code=201,
    responses=JOB_ERRORS,
    summary="Refit a category from its fit's own images less those found defective: a queued job",
)
def refit_category(request: Request, name: Annotated[str, PathParam(**CATEGORY)], body: RefitRequest) -> dict:
    """A defect found among the good images (``highest_good_scores``) raises the threshold and is learnt as good; a
    refit without it chooses the memory bank and the good scores again. For a category fitted by a job, whose
    training images stay stored: a new job with the fit's options and its images and the good images added since,
    less ``exclude_image_ids`` (a training image or an added one), queued for a worker; the version in service
    answers until it succeeds. The threshold is set again at the category's false-alarm rate (one set since by
    hand is kept); a threshold set since as a value or from labelled images is not carried over."""
    return _run(request, _refit, name, body.exclude_image_ids, "kept", actor_of(request))


@router.put(
    "/categories/{name}/care-area",
    response_model=Job,
    status_code=201,
    responses=JOB_ERRORS,
    summary="Draw a category's care area again: a queued refit from its images with the new mask",
)
async def refit_with_care_area(
    request: Request,
    name: Annotated[str, PathParam(**CATEGORY)],
    file: CareMask,
) -> dict:
    """The patch cells outside a category's area were never learnt, so another area needs a fit: for a category
    fitted by a job, whose training images stay stored, a refit job (as ``POST /categories/{name}/refit`` makes)
    whose worker fits with this mask; the version in service answers with the old area until it succeeds."""
    data, actor = await read_limited(file, get_services(request).settings.max_upload_bytes), actor_of(request)

    def work(connection):
        return _refit(connection, name, [], CareArea.read(data, file.filename or "the care area").png(), actor)

    return await run_in_threadpool(_run, request, work)


@router.delete(
    "/categories/{name}/care-area",
    response_model=Job,
    status_code=201,
    responses=JOB_ERRORS,
    summary="Inspect all of each picture again: a queued refit from the category's images without a care area",
)
def refit_without_care_area(request: Request, name: Annotated[str, PathParam(**CATEGORY)]) -> dict:
    return _run(request, _refit, name, [], None, actor_of(request))


def _refit(
    connection, name: str, exclude_image_ids: list[int], care: bytes | Literal["kept"] | None, actor: str | None
) -> dict:
    """A refit job of the category's active version less the good images ``exclude_image_ids``, with its care area
    (``"kept"``) or another one (a mask's PNG, refused where the fit's options cannot take it; ``None``: none)."""
    model = active(connection, name)
    if care not in ("kept", None):
        replace(model.config, care_area=care)  # refused (422) where a fit with the version's options cannot take it
    found = images.hashes(connection, model.bank_segments, exclude_image_ids)
    unknown = sorted(set(exclude_image_ids) - set(found))
    if unknown:
        raise HTTPException(
            404,
            {"error": "unknown_image", "detail": f"image(s) {', '.join(map(str, unknown))} are not good images "
             f"of {name} (version {model.id}); see GET /categories/{name}"},
        )  # fmt: skip
    excluded = {digest: file_name for digest, file_name in found.values()}
    target = {"false_alarm_rate": model.config.false_alarm_rate,
              "per": model.threshold_policy.get("per", PER_IMAGE)}  # fmt: skip
    return jobs.refit(connection, name, model.fit_id, model.bank_segments, excluded, target, actor, care)
