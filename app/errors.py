"""Every error the API answers is JSON: ``{"error": code, "detail": what to do}``, with the status that fits it."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import observability
from app.recording import RecordRefused
from app.services import CategoryChanging, DatabaseUnavailable, UnknownCategory
from patchcore import ImageError, WeightsError
from patchcore.errors import ImageShapeError, ImageTooLargeError
from revisions.normals import NeedsRefit
from store import models, versions
from store.names import near


def error(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": code, "detail": detail})


async def _database_down(_: Request, exc: DatabaseUnavailable) -> JSONResponse:
    return error(503, "database_unavailable", f"the database does not answer ({exc}); retry shortly")


async def _category_changing(_: Request, exc: CategoryChanging) -> JSONResponse:
    return error(503, "category_changing", f"{exc}: versions are being made faster than an image is inspected; "
                 "ask again")  # fmt: skip


async def _record_refused(_: Request, exc: RecordRefused) -> JSONResponse:
    observability.REFUSED_UNRECORDED.inc()
    return error(503, "not_recorded", f"the inspection log could not take the record ({exc}), so no verdict is "
                  "given (INSPECT_LOG_POLICY=refuse); retry shortly")  # fmt: skip


async def _unknown_category(request: Request, exc: UnknownCategory) -> JSONResponse:
    try:  # the fitted categories' names, read only on this path: "Bottle" answered with the name meant
        known = await run_in_threadpool(request.app.state.services.run, models.active_ids)
    except DatabaseUnavailable:
        known = {}
    return error(404, "unknown_category", f"no fitted model for category {exc}{near(str(exc), known)}; see GET "
                 "/categories")  # fmt: skip


async def _conflict(_: Request, exc: versions.VersionConflict) -> JSONResponse:
    return error(409, "version_conflict", f"{exc}; read the category again and retry")


async def _needs_refit(_: Request, exc: NeedsRefit) -> JSONResponse:
    return error(409, "needs_refit", str(exc))


async def _too_many_pixels(_: Request, exc: ImageTooLargeError) -> JSONResponse:
    return error(413, "image_too_large", str(exc))


async def _bad_shape(_: Request, exc: ImageShapeError) -> JSONResponse:
    return error(422, "unsupported_image_shape", str(exc))


async def _bad_image(_: Request, exc: ImageError) -> JSONResponse:
    return error(415, "unsupported_image", str(exc))


async def _weights(_: Request, exc: WeightsError) -> JSONResponse:
    return error(503, "weights_unavailable", str(exc))


async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if isinstance(exc.detail, dict):
        return JSONResponse(status_code=exc.status_code, content=exc.detail, headers=exc.headers)
    if exc.status_code == 400:  # the form parser's own words for a body it cannot read
        kind = request.headers.get("content-type", "none")
        return error(
            400, "invalid_body", f"the body is not a readable multipart/form-data upload ({exc.detail}; type {kind})"
        )
    return error(exc.status_code, "http_error", str(exc.detail))


async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg')}" for e in exc.errors()
    )
    return error(422, "invalid_request", problems)


def install(app: FastAPI) -> None:
    """Map every exception a route may raise to its JSON answer."""
    for exception, handler in (
        (DatabaseUnavailable, _database_down),
        (CategoryChanging, _category_changing),
        (RecordRefused, _record_refused),
        (UnknownCategory, _unknown_category),
        (versions.VersionConflict, _conflict),
        (NeedsRefit, _needs_refit),
        (ImageTooLargeError, _too_many_pixels),
        (ImageShapeError, _bad_shape),
        (ImageError, _bad_image),
        (WeightsError, _weights),
        (StarletteHTTPException, _http),
        (RequestValidationError, _validation),
    ):
        app.add_exception_handler(exception, handler)
