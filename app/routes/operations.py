"""What operators and orchestrators ask: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app import observability
from app.common import OPEN_WARNING, get_services, keys
from app.schemas.operations import Health, Ready
from app.services import DatabaseUnavailable
from store import models

router = APIRouter(tags=["operations"])


@router.get("/health", response_model=Health, summary="The process answers; says whether API keys are required")
def health() -> dict:
    if keys().keys:
        return {"status": "ok", "auth": "keys"}
    return {"status": "ok", "auth": "open", "warning": OPEN_WARNING}


@router.get("/metrics", response_class=Response, summary="Prometheus metrics (text format)")
def metrics(request: Request) -> Response:
    services = get_services(request)
    observability.MODELS_LOADED.set(len(services.loaded()))
    observability.MODELS_LOADING.set(len(services.loading()))
    observability.LOADED_VERSION.clear()
    for category, version in services.loaded_versions().items():
        observability.LOADED_VERSION.labels(category).set(version)
    return Response(generate_latest(observability.REGISTRY), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/ready",
    response_model=Ready,
    responses={503: {"model": Ready}},
    summary="A fitted category, the database (or a standby in rotation) answering, every category loaded",
)
def ready(request: Request) -> JSONResponse:
    services = get_services(request)
    try:
        names = [m.category for m in services.run(models.active_models)]
        database = True
    except DatabaseUnavailable:
        names, database = services.loaded(), False
    standbys = services.standbys.describe()[0]
    # with the primary down, standbys in rotation still answer the loaded categories (answers say "not recorded")
    ok = bool(names) and (database or any(s["in_rotation"] for s in standbys))
    loading = services.loading()  # answered meanwhile, each such category's first query loading it
    status = "loading" if ok and loading else "ready" if ok else "not_ready"
    body = {"status": status, "database": database, "categories": names, "loaded": services.loaded(),
            "loading": loading, "standbys": standbys}  # fmt: skip
    return JSONResponse(status_code=200 if status == "ready" else 503, content=body)
