"""What operators watch: Prometheus metrics and one JSON log line per request, each with a request id.

The request id is the client's ``X-Request-ID`` when it sends a sane one, else a new one; every response carries it
back, the inspection log keeps it, and the log line names it, so one id follows a request through all three.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

REGISTRY = CollectorRegistry()
REQUESTS = Counter(
    "inspect_requests", "HTTP requests answered, by route template, method and status", ["route", "method", "status"],
    registry=REGISTRY,
)  # fmt: skip
LATENCY = Histogram(
    "inspect_request_seconds", "HTTP request latency by route template", ["route"], registry=REGISTRY,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0),
)  # fmt: skip
STAGES = Histogram(
    "inspect_query_stage_seconds", "time of each stage of /query: decode, embed, search, rerank, score, defects, log",
    ["stage"], registry=REGISTRY, buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)  # fmt: skip
VERDICTS = Counter("inspect_verdicts", "verdicts by category", ["category", "verdict"], registry=REGISTRY)
DEFECT_TYPES = Counter(
    "inspect_defect_types", "known defect types named by /query, by category", ["category", "defect_type"],
    registry=REGISTRY,
)  # fmt: skip
UNRECORDED = Counter(
    "inspect_inspections_unrecorded", "answered queries whose inspection record could not be written",
    registry=REGISTRY,
)  # fmt: skip
REFUSED_UNRECORDED = Counter(
    "inspect_inspections_refused", "queries answered 503 because their record could not be written in time",
    registry=REGISTRY,
)  # fmt: skip
REFUSED = Counter("inspect_auth_refused", "requests refused by the key check or the rate limit", ["reason"],
                  registry=REGISTRY)  # fmt: skip
SEARCHES = Counter(
    "inspect_searches", "patch searches of /query, by backend (database: HNSW in PostgreSQL; exact: in the API "
    "process) and torch device", ["backend", "device"], registry=REGISTRY,
)  # fmt: skip
RERANK_CAPPED = Counter(
    "inspect_rerank_capped", "answers whose exact re-rank stopped at INSPECT_EXACT_RERANK before the largest patch "
    "distance was certain (its score may be too large, never too small): raise INSPECT_HNSW_EF_SEARCH or the cap",
    ["category"], registry=REGISTRY,
)  # fmt: skip
MODELS_LOADED = Gauge("inspect_models_loaded", "categories loaded in this process", registry=REGISTRY)
LOADED_VERSION = Gauge(
    "inspect_loaded_version",
    "the version each loaded category answers with in this process",
    ["category"],
    registry=REGISTRY,
)
MODELS_LOADING = Gauge(
    "inspect_models_loading", "categories this process loads since it started and holds not yet", registry=REGISTRY
)


class PoolCollector:
    """The database pool's state at scrape time (psycopg_pool's own statistics)."""

    def __init__(self, stats: Callable[[], dict]) -> None:
        self.stats = stats

    def collect(self):
        stats = self.stats()
        family = GaugeMetricFamily(
            "inspect_db_pool_connections", "database pool connections by state", labels=["state"]
        )
        for state, key in (("size", "pool_size"), ("available", "pool_available"), ("waiting", "requests_waiting")):
            family.add_metric([state], float(stats.get(key, 0)))
        yield family


class StandbyCollector:
    """The standbys' state at scrape time (:meth:`serving.replicas.Standbys.describe`)."""

    def __init__(self, state: Callable[[], tuple[list[dict], int]]) -> None:
        self.state = state  # not "describe": prometheus-client calls a collector's describe() at registration

    def collect(self):
        standbys, primary = self.state()
        if not standbys:
            return
        rotation = GaugeMetricFamily("inspect_standby_in_rotation", "1 when searches go to it", labels=["standby"])
        lag = GaugeMetricFamily("inspect_standby_lag_seconds", "replay lag behind the primary", labels=["standby"])
        answered = CounterMetricFamily(
            "inspect_standby_answered", "searches and memory-bank reads it answered", labels=["standby"]
        )
        skipped = CounterMetricFamily(
            "inspect_standby_skipped",
            "searches it did not answer: behind (lacked the version), failed, busy (no free connection)",
            labels=["standby", "reason"],
        )
        for standby in standbys:
            rotation.add_metric([standby["name"]], float(standby["in_rotation"]))
            if standby["lag_seconds"] is not None:
                lag.add_metric([standby["name"]], standby["lag_seconds"])
            answered.add_metric([standby["name"]], float(standby["answered"]))
            for reason, count in standby["skipped"].items():
                skipped.add_metric([standby["name"], reason], float(count))
        instead = CounterMetricFamily(
            "inspect_primary_answered_instead", "searches and bank reads the primary answered as no standby could"
        )
        instead.add_metric([], float(primary))
        yield from (rotation, lag, answered, skipped, instead)


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
access = logging.getLogger("app.access")


# The service's loggers: the access log (``app.access``, one line per request) and the events of the API's own work
# (a category loaded and how it is searched, a standby out of rotation, inspection images expired, a record not
# written), all as JSON lines on stderr at INFO. Left to Python's defaults, the events at INFO went nowhere and the
# warnings reached stderr as bare text.
SERVICE_LOGGERS = ("app", "serving")


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = getattr(record, "fields", None) or {"logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            line = {**line, "exception": self.formatException(record.exc_info)}
        return json.dumps({"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname, **line})


def configure_logs() -> None:
    """JSON lines on stderr for :data:`SERVICE_LOGGERS` (the access log among them), once per process."""
    for name in SERVICE_LOGGERS:
        logger = logging.getLogger(name)
        if not logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(JsonLines())
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False


class Observe:
    """ASGI middleware: request id in and out, one JSON log line, request counters and latency by route template."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = {"code": 500}

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or ("unmatched" if status["code"] == 404 else "other")
            REQUESTS.labels(route, scope["method"], str(status["code"])).inc()
            LATENCY.labels(route).observe(seconds)
            client = scope.get("client")
            access.info("request", extra={"fields": {
                "request_id": request_id, "method": scope["method"], "path": scope["path"], "route": route,
                "status": status["code"], "ms": round(seconds * 1000, 1), "key": scope["state"].get("api_key"),
                "client": client[0] if client else None,
            }})  # fmt: skip


# The drift gauges, each per category: its metric's name and help, in the order /metrics lists them.
DRIFT_GAUGES = {
    "share": ("inspect_flagged_share", "share of parts flagged in the drift window (the versions of its setting)"),
    "predicted": ("inspect_predicted_false_alarm_rate", "share of good parts their thresholds are expected to flag"),
    "answered": ("inspect_drift_window_inspections", "answers in the drift window"),
    "warning": (
        "inspect_drift_warning",
        "1 when the predicted rate is outside the flagged share's 90% interval, even with one answer moved",
    ),
    "parts": ("inspect_drift_window_parts", "parts named by answers in the drift window"),
    "parts_share": ("inspect_parts_flagged_share", "share of those parts flagged on any view"),
    "parts_warning": (
        "inspect_parts_drift_warning",
        "1 when the per-part predicted rate is outside that share's 90% interval, even with one answer moved",
    ),
    "reviewed": (
        "inspect_reviewed_false_alarm_rate",
        "share of good parts flagged in the drift window, as its reviews say (absent until a flagged answer is)",
    ),
    "reviewed_warning": (
        "inspect_reviewed_drift_warning",
        "1 when the predicted rate is outside that share's 90% interval, even with one answer moved",
    ),
    "reviewed_parts": (
        "inspect_reviewed_parts_false_alarm_rate",
        "share of good named parts flagged on any view in the drift window, as their reviews say (absent until a "
        "flagged part is reviewed)",
    ),
    "reviewed_parts_warning": (
        "inspect_reviewed_parts_drift_warning",
        "1 when the per-part predicted rate is outside that share's 90% interval, even with one answer moved",
    ),
    "body": (
        "inspect_passed_above_good_median_share",
        "share of the passed answers in the drift window scoring above the good scores' median (absent until a part "
        "passed)",
    ),
    "body_expected": (
        "inspect_passed_above_good_median_expected",
        "the share a calibrated line gives: (0.5 - r) / (1 - r), r the predicted rate",
    ),
    "body_warning": (
        "inspect_body_drift_warning",
        "1 when the expected share is outside that share's 90% interval, even with one answer moved: the passed parts "
        "score unlike good ones",
    ),
}


class DriftCollector:
    """Each loaded category's drift at scrape time (``serving/drift.py``): the share flagged in the recent window (by
    its active version and the versions of its fit set alike), the false-alarm rate their thresholds predict, and the
    warning; the same for the parts its
    answers named (0 parts and no warning where none were), the false-alarm rates their reviews give, and where the
    passed parts' scores lie against the good parts' median. A share that cannot be said yet (no answer, no review)
    is left out rather than reported as 0."""

    def __init__(self, reports: Callable[[], list[dict]]) -> None:
        self.reports = reports

    def collect(self):
        gauges = {key: GaugeMetricFamily(name, text, labels=["category"]) for key, (name, text) in DRIFT_GAUGES.items()}
        for report in self.reports():
            named, reviews, body = report["parts"], report["reviews"], report["body"]
            named_reviews = named and named["reviews"]
            values = {
                "share": report["flagged_share"],
                "predicted": report["predicted_false_alarm_rate"],
                "answered": report["inspections"],
                "warning": report["warning"],
                "parts": named["parts"] if named else 0,
                "parts_share": named and named["flagged_share"],
                "parts_warning": bool(named and named["warning"]),
                "reviewed": reviews and reviews["false_alarm_rate"],
                "reviewed_warning": bool(reviews and reviews["warning"]),
                "reviewed_parts": named_reviews and named_reviews["false_alarm_rate"],
                "reviewed_parts_warning": bool(named_reviews and named_reviews["warning"]),
                "body": body and body["share"],
                "body_expected": body and body["expected_share"],
                "body_warning": bool(body and body["warning"]),
            }
            for key, value in values.items():
                if value is not None:
                    gauges[key].add_metric([report["category"]], float(value))
        yield from gauges.values()


class BatchCollector:
    """The micro-batches of the embedding (``serving/batching.py``) at scrape time: how many ran and how many
    requests they held (their ratio is the mean batch size; both stay 0 where batching is off)."""

    def __init__(self, counts: Callable[[], tuple[int, int]]) -> None:
        self.counts = counts

    def collect(self):
        batches, views = self.counts()
        ran = CounterMetricFamily("inspect_embed_batches", "forward passes of the embedding network in micro-batches")
        ran.add_metric([], float(batches))
        held = CounterMetricFamily("inspect_embed_batched_requests", "requests embedded in those micro-batches")
        held.add_metric([], float(views))
        yield ran
        yield held
