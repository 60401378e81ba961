"""What the API's routers share: the services of the running app, the API keys and rate limit, the documented error
answers, the category name's rule, who is asking, reading an upload within the size limit, a category's active
version, an inspection record, a label's rule, and images answered with their cache headers."""

from __future__ import annotations

import hashlib
import math
from functools import lru_cache
from typing import Annotated

from fastapi import File, HTTPException, Request, Response, UploadFile

from app.auth import Keys, RateLimit
from app.schemas.errors import Error
from app.services import Services, UnknownCategory
from config import get_settings
from config.keys import parse_keys
from revisions.defects import check_defect_type
from store import inspections, models
from store.names import NAME_MAX, NAME_PATTERN

ERRORS = {
    400: {"model": Error, "description": "bad form field"},
    404: {"model": Error, "description": "unknown category"},
    409: {"model": Error, "description": "the category changed meanwhile"},
    413: {"model": Error, "description": "file or image too large"},
    415: {"model": Error, "description": "not a readable image"},
    422: {"model": Error, "description": "invalid request"},
    503: {"model": Error, "description": "database unavailable"},
}

# what the database accepts as a category name (migration 0001); anything else is refused before it reaches SQL
CATEGORY = {"pattern": NAME_PATTERN, "max_length": NAME_MAX}
# a care area's mask as uploaded (patchcore.care reads it): a job's, a category's for a refit, one to preview
CareMask = Annotated[UploadFile, File(description="an image: white (non-black) where the part is, black elsewhere")]
# a part's identifier as a line writes it (a serial number, "lot 7/tray 3"): any printable text, kept as sent
PART = {
    "min_length": 1, "max_length": 200, "pattern": r"^[^\x00-\x1f\x7f]+$",
    "description": "the part this image shows, as the line names it (a serial number); the views of one part share "
    "it, and GET /parts/{part} gives its verdict over them",
}  # fmt: skip


def get_services(request: Request) -> Services:
    return request.app.state.services


def api_key_of(request: Request) -> str | None:
    """The name of the API key the request came with (None where the service is open)."""
    return request.scope.get("state", {}).get("api_key")


def actor_of(request: Request) -> str:
    """Who made a change, for the category's log: the address, and the key's name where keys are required."""
    host = request.client.host if request.client else "unknown"
    key = api_key_of(request)
    return f"api {host}" + (f" (key {key})" if key else "")


async def read_limited(upload: UploadFile, limit: int) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(
            413, {"error": "file_too_large", "detail": f"the file is larger than the limit of {limit} bytes"}
        )
    return data


OPEN_WARNING = (
    "NO API KEY IS CONFIGURED: anyone who reaches this service can inspect, read the log and change categories; "
    "set INSPECT_API_KEYS (python -m ingest new-key)"
)


@lru_cache
def keys() -> Keys:
    return Keys(parse_keys(get_settings().api_keys))


@lru_cache
def rate_limit() -> RateLimit | None:
    per_minute = get_settings().rate_limit_per_minute
    return RateLimit(per_minute) if per_minute else None


def charge(request: Request, more: int) -> None:
    """Count ``more`` requests against the rate limit of whoever sent this one (a batch's images beyond the one the
    door counted); past it a 429, with Retry-After where waiting would help, as the door answers."""
    limit = rate_limit()
    who = request.scope.get("state", {}).get("rate_key")
    if limit is None or who is None or more <= 0:
        return
    if more + 1 > limit.capacity:
        detail, headers = f"{more + 1} images are more than the {int(limit.capacity)} requests a minute allowed", {}
    else:
        wait = limit.wait_seconds(who, more)
        if wait <= 0:
            return
        detail = f"{more + 1} images would pass {int(limit.capacity)} requests a minute; retry in {math.ceil(wait)} s"
        headers = {"Retry-After": str(math.ceil(wait))}
    raise HTTPException(429, {"error": "rate_limited", "detail": detail}, headers=headers)


def active(connection, name: str) -> models.StoredModel:
    """The category's active version, or the 404 that names it."""
    model = models.active_model(connection, name)
    if model is None:
        raise UnknownCategory(name)
    return model


IMMUTABLE = "public, max-age=31536000, immutable"  # a stored image never changes: a new fit stores new ids


def image_response(request: Request, data: bytes, media_type: str, cache: str = IMMUTABLE) -> Response:
    etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
    headers = {"Cache-Control": cache, "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=media_type, headers=headers)


def check_label(label: str) -> None:
    """good, or a defect type the library accepts: anything else is a 422 naming the rule."""
    if label == "good":
        return
    try:
        check_defect_type(label)
    except ValueError as exc:
        raise HTTPException(422, {"error": "invalid_request", "detail": f"label: {exc}"}) from exc


def inspection_or_404(request: Request, inspection_id: int) -> dict:
    record = get_services(request).run(inspections.one, inspection_id)
    if record is None:
        raise HTTPException(404, {"error": "unknown_inspection", "detail": f"no inspection {inspection_id}"})
    return record
