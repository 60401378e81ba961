"""Pictures from the database: stored good images as the model saw them, a patch's neighbourhood, defect examples;
and a picture sent as the service reads it, for a browser that cannot draw its format."""

from __future__ import annotations

import io
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import Response
from PIL import Image
from starlette.concurrency import run_in_threadpool

from app.common import CATEGORY, ERRORS, get_services, image_response, read_limited
from app.services import Services, UnknownCategory
from patchcore.features import STRIDES
from patchcore.images import open_image, original_size, reduced, white_level
from store import defects, models, pictures

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


PREVIEW_SIDE = 1024  # the longest side a preview is drawn at: finer than any page shows a picture


@router.post(
    "/images/preview",
    responses={**ERRORS, 200: {"content": {"image/png": {}}, "description": "the picture as the service reads it"}},
    response_class=Response,
    summary="A picture as the service decodes it (upright, 8 bits a sample), as a PNG any browser draws",
)
async def image_preview(
    request: Request,
    file: Annotated[UploadFile, File(description="an image, as POST /query takes one")],
    category: Annotated[str | None, Form(description="decoded as this category's model decodes", **CATEGORY)] = None,
) -> Response:
    """For pages whose browser cannot draw the format sent: no Chromium draws a TIFF or a Netpbm file (PGM, PPM),
    which line cameras and machine-vision tools write, so the inspect page shows it, and a care area is drawn over it,
    as this PNG. At most ``PREVIEW_SIDE`` pixels on
    its longer side (reduced by a whole factor); ``X-Image-Width`` and ``X-Image-Height`` give the size it was sent at,
    upright, in which every box of an answer lies. Samples of more than 8 bits are read against the picture's own
    bit depth (:func:`patchcore.images.white_level`), or with ``category`` against that category's white level, as
    its model reads them; nothing is stored."""
    services = get_services(request)
    data = await read_limited(file, services.settings.max_upload_bytes)
    name = file.filename or "upload"
    return await run_in_threadpool(_preview, services, data, name, category)


def _preview(services: Services, data: bytes, name: str, category: str | None) -> Response:
    limit = services.settings.max_image_pixels
    if category is None:
        image = open_image(data, name, limit)  # every check of a query's decoding first, its pixel budget among them
        if (own := white_level([data])) is not None:  # at its own bit depth: a 12-bit camera's not shown dark
            image = open_image(data, name, limit, white_level=own)
    else:  # the stored settings: no memory bank is loaded for a picture to be drawn
        model = services.run(models.active_model, category)
        if model is None:
            raise UnknownCategory(category)
        image = model.config.preprocess.decode(data, name, limit)
    width, height = original_size(image)
    image = reduced(image, PREVIEW_SIDE)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    headers = {"X-Image-Width": str(width), "X-Image-Height": str(height), "Cache-Control": "no-store"}
    return Response(buffer.getvalue(), media_type="image/png", headers=headers)
