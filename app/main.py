"""The application: built from the routers of :mod:`app.routes` (one per resource), with its request limits, API
keys, error answers, metrics and the services it starts and stops. Scoring lives in :mod:`serving.inspector`."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool

from app import errors, memory, observability
from app.auth import Guard
from app.common import OPEN_WARNING, keys, rate_limit
from app.limits import BodyLimit
from app.routes import care, categories, images, inspection, jobs, log, operations, pages, teaching
from app.services import DatabaseUnavailable, Services, UnknownCategory
from config import get_settings
from serving import batching

logger = logging.getLogger("app")


@asynccontextmanager
async def lifespan(app: FastAPI):
    settings = get_settings()
    observability.configure_logs()
    memory.cap_malloc_arenas()
    if not keys().keys:
        logger.warning(OPEN_WARNING)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    services = Services(settings)
    _POOL["stats"] = services.pool.get_stats
    _POOL["standbys"] = services.standbys.describe
    _POOL["services"] = services
    await run_in_threadpool(services.open)
    app.state.services = services
    yield
    services.close()


def _loaded_drift() -> list[dict]:
    """Drift counts of every loaded category, for the metrics scrape: a category no longer fitted is left out, and
    while the database is away the scrape goes on without drift."""
    services = _POOL.get("services")
    reports = []
    for name in services.loaded() if services is not None else []:
        try:
            reports.append(categories.drift_report(services, name, distributions=False))
        except UnknownCategory:
            continue
        except DatabaseUnavailable:
            return reports
    return reports


_POOL: dict = {"stats": dict, "standbys": lambda: ([], 0)}
observability.REGISTRY.register(observability.PoolCollector(lambda: _POOL["stats"]()))
observability.REGISTRY.register(observability.StandbyCollector(lambda: _POOL["standbys"]()))
observability.REGISTRY.register(observability.DriftCollector(_loaded_drift))
observability.REGISTRY.register(observability.BatchCollector(batching.totals))

# GET /docs and /redoc with Swagger UI's and ReDoc's scripts served from here (/docs/assets), not from a CDN: a line's
# network often reaches no internet, where FastAPI's own pages stay blank
app = FastAPIOffline(
    title="PatchCore inspection service",
    description="Anomaly detection for industrial parts: PatchCore with its memory bank in PostgreSQL/pgvector.",
    version="0.1.0",
    lifespan=lifespan,
    static_url="/docs/assets",
    favicon_url="/static/icon.svg",
)
errors.install(app)
for module in (inspection, categories, teaching, images, pages, operations, log, jobs, care):
    app.include_router(module.router)
app.mount("/static", StaticFiles(directory=pages.PAGES), name="static")
app.add_middleware(BodyLimit, limit=lambda: get_settings().max_upload_bytes)
app.add_middleware(Guard, keys=keys, rate_limit=rate_limit, refused=lambda why: observability.REFUSED.labels(why).inc())
app.add_middleware(observability.Observe)  # outermost: every answer, refusals included, gets its id and log line
