"""What every router of the API shares: the services of the running app, the documented error answers, the
category name's rule, who is asking, and reading an upload within the size limit."""

from __future__ import annotations

from fastapi import HTTPException, Request, UploadFile

from app.schemas import Error
from app.services import Services

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
CATEGORY = {"pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", "max_length": 100}


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
