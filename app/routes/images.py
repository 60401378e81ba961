"""Pictures from the database: stored good images as the model saw them, a patch's neighbourhood, defect examples."""

from __future__ import annotations

import io
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from PIL import Image

from app.common import ERRORS, get_services, image_response
from patchcore.features import STRIDES
from store import defects, pictures

router = APIRouter(tags=["images"])


@router.get(
    "/defects/{defect_id}",
    responses={**ERRORS, 200: {"content": {"image/jpeg": {}}, "description": "the example as the model saw it"}},
    response_class=Response,
    summary="A known defect example of a library, as the model saw it, from the database",
)
def defect_image(request: Request, defect_id: int) -> Response:
    found = get_services(request).run(defects.example_view, defect_id)
    if found is None:
        raise HTTPException(404, {"error": "unknown_defect", "detail": f"no stored defect example {defect_id}"})
    return image_response(request, found[0], "image/jpeg")


def _stored_view(request: Request, image_id: int) -> pictures.StoredView:
    view = get_services(request).run(pictures.image_view, image_id)
    if view is None:
        raise HTTPException(
            404, {"error": "unknown_image", "detail": f"no stored image {image_id}; image ids come from /query answers"}
        )
    return view


@router.get(
    "/images/{image_id}",
    responses={**ERRORS, 200: {"content": {"image/jpeg": {}}, "description": "the image as the model saw it"}},
    response_class=Response,
    summary="A stored good image, as the model saw it (its view), from the database",
)
def image(request: Request, image_id: int) -> Response:
    view = _stored_view(request, image_id)
    return image_response(request, view.data, view.media_type)


@router.get(
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
    return image_response(request, buffer.getvalue(), "image/png")
