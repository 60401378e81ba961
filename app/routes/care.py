"""A care area's cells before any fit: the patch grid a picture of a given size gets at a given view, and which of
its cells a mask inspects, by the fit's own rule (:mod:`patchcore.care`), so a page drawing an area shows exactly
what a fit with it would learn and score."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from app.common import ERRORS, CareMask, get_services, read_limited
from app.schemas.care import CareCells
from patchcore.care import CareArea
from patchcore.features import STRIDES
from patchcore.model import PatchCoreConfig

router = APIRouter(tags=["care area"])


@router.post(
    "/care-area/cells",
    response_model=CareCells,
    responses=ERRORS,
    summary="The patch cells a care area inspects of a picture of this size at this view, as a fit would",
)
async def care_cells(
    request: Request,
    file: CareMask,
    width: Annotated[int, Form(ge=1, le=65535, description="the picture's width in pixels")],
    height: Annotated[int, Form(ge=1, le=65535, description="the picture's height in pixels")],
    pixels: Annotated[int | None, Form(ge=64 * 64, le=4096 * 4096, description="the view's pixels (224x224)")] = None,
) -> dict:
    data = await read_limited(file, get_services(request).settings.max_upload_bytes)
    try:
        return await run_in_threadpool(_cells, data, file.filename or "the care area", width, height, pixels)
    except ValueError as exc:
        raise HTTPException(422, {"error": "invalid_request", "detail": str(exc)}) from exc


def _cells(data: bytes, name: str, width: int, height: int, pixels: int | None) -> dict:
    """The grid of the whole field of view (the only one an area takes) at ``pixels``, and the mask's cells of it."""
    config = PatchCoreConfig(**({"pixels": pixels} if pixels else {}))
    view, stride = config.preprocess.view(width, height), STRIDES[config.layers[0]]
    rows, cols = view.height // stride, view.width // stride
    inspected = set(CareArea.read(data, name).cells(rows, cols).tolist())
    return {
        "rows": rows,
        "cols": cols,
        "cell": [round(stride / view.scale_x, 2), round(stride / view.scale_y, 2)],
        "inspected": len(inspected),
        "share": round(len(inspected) / (rows * cols), 4),
        "cells": ["".join("1" if r * cols + c in inspected else "0" for c in range(cols)) for r in range(rows)],
    }
