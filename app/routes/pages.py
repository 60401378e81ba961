"""The pages a person uses (plain HTML and JavaScript from ``app/static``; nothing fetched from elsewhere)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

router = APIRouter(tags=["pages"])


PAGES = Path(__file__).resolve().parents[1] / "static"


@router.get("/", response_class=HTMLResponse, summary="The inspect page: a person's view of POST /query")
def inspect_page() -> HTMLResponse:
    """Plain HTML and JavaScript, no asset from elsewhere (an offline factory network is enough); it calls the
    same endpoints as any client."""
    return HTMLResponse((PAGES / "inspect.html").read_text(encoding="utf-8"))


@router.get("/category", response_class=HTMLResponse, summary="The category page (?name=...): what a category knows")
def category_page() -> HTMLResponse:
    return HTMLResponse((PAGES / "category.html").read_text(encoding="utf-8"))


@router.get(
    "/review", response_class=HTMLResponse, summary="The review page: the log with thumbnails, confirm or correct"
)
def review_page() -> HTMLResponse:
    return HTMLResponse((PAGES / "review.html").read_text(encoding="utf-8"))


@router.get("/new", response_class=HTMLResponse, summary="The new product page: upload good images, fit by a worker")
def new_product_page() -> HTMLResponse:
    return HTMLResponse((PAGES / "new.html").read_text(encoding="utf-8"))


@router.get("/favicon.ico", include_in_schema=False)
def icon() -> FileResponse:
    """The pages' icon where a browser or a bookmark asks for it by the old fixed name (the pages name it
    themselves), so no visit logs a 404."""
    return FileResponse(PAGES / "icon.svg", media_type="image/svg+xml")
