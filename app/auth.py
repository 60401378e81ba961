"""Who may do what: API keys with a role, checked in constant time, and a per-key request rate, as ASGI middleware.

Keys come from configuration as ``name:role:sha256`` (``INSPECT_API_KEYS``): only each key's SHA-256 is known to the
service. A request sends its key as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Roles: ``inspect``
(query, read categories, pictures, inspections, jobs and metrics, a picture drawn as the service reads it) and
``admin`` (also change a category: threshold, normals, defects, feedback, reviews, fit jobs, deletion). No key
configured: the service is open, as it always was, and says so at start and in ``/health``. Probes (``/health``,
``/ready``), the pages, their static files and icon, and the API docs stay open: they hold no data, and the pages ask
for a key when the API answers 401.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import threading
import time
from collections.abc import Callable

from config.keys import ApiKey

_OPEN = re.compile(r"^/(health|ready|category|review|new|static/.*|favicon\.ico|docs|docs/.*|redoc|openapi\.json)?$")
_ADMIN_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


class Keys:
    def __init__(self, keys: list[ApiKey]) -> None:
        self.keys = keys

    def identify(self, presented: str) -> ApiKey | None:
        """The configured key ``presented`` is, compared in constant time against EVERY configured key (no early
        exit), so the answer's timing says neither whether nor where a key matched."""
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found


# posted by a line's inspect key: judging a picture, or drawing one, changes nothing
UNCHANGING_POSTS = ("/query", "/query/batch", "/images/preview")


def required_role(method: str, path: str) -> str | None:
    """The role a request needs: ``None`` for what is open, ``admin`` for changes, ``inspect`` for the rest."""
    if _OPEN.match(path):
        return None
    if method in _ADMIN_METHODS and path not in UNCHANGING_POSTS:
        return "admin"
    return "inspect"


def presented_key(headers: dict[bytes, bytes]) -> str | None:
    authorization = headers.get(b"authorization", b"").decode("latin-1")
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    key = headers.get(b"x-api-key")
    return key.decode("latin-1").strip() if key else None


class RateLimit:
    """At most ``per_minute`` requests per key (per client address when the service is open), as a token bucket
    per API process: a burst of ``per_minute`` then ``per_minute / 60`` a second."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.buckets: dict[str, tuple[float, float]] = {}
        self.lock = threading.Lock()

    def wait_seconds(self, who: str, cost: int = 1) -> float:
        """0 when ``cost`` requests may go ahead (and are counted), else the seconds until they may."""
        now = time.monotonic()
        with self.lock:
            tokens, last = self.buckets.get(who, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens >= cost:
                self.buckets[who] = (tokens - cost, now)
                return 0.0
            self.buckets[who] = (tokens, now)
            return (cost - tokens) / self.rate


async def _refuse(send: Callable, status: int, code: str, detail: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps({"error": code, "detail": detail}).encode()
    await send({
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"), *headers],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: a request without the role its route needs is answered 401 or 403 before its body is read;
    past the rate limit 429 with ``Retry-After``. The key's name is left in ``scope["state"]["api_key"]``."""

    def __init__(self, app, keys: Callable[[], Keys], rate_limit: Callable[[], RateLimit | None], refused=None) -> None:
        self.app = app
        self.keys = keys
        self.rate_limit = rate_limit
        self.refused = refused or (lambda reason: None)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        keys = self.keys()
        role = required_role(scope["method"], scope["path"])
        state = scope.setdefault("state", {})
        who = None
        if keys.keys and role is not None:
            presented = presented_key(dict(scope["headers"]))
            if not presented:
                self.refused("missing")
                await _refuse(
                    send,
                    401,
                    "unauthorized",
                    "this service needs an API key: send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                    [(b"www-authenticate", b"Bearer")],
                )
                return  # fmt: skip
            key = keys.identify(presented)
            if key is None:
                self.refused("wrong")
                await _refuse(
                    send,
                    401,
                    "unauthorized",
                    "the API key is not one this service knows (revoked or mistyped)",
                    [(b"www-authenticate", b'Bearer error="invalid_token"')],
                )
                return  # fmt: skip
            if role == "admin" and key.role != "admin":
                self.refused("role")
                await _refuse(
                    send,
                    403,
                    "forbidden",
                    f"key {key.name} has the role {key.role}; {scope['method']} {scope['path']} needs admin",
                    [],
                )
                return  # fmt: skip
            who = key.name
            state["api_key"] = key.name
        limit = self.rate_limit()
        if limit is not None and role is not None:
            client = scope.get("client")
            state["rate_key"] = who or f"address {client[0] if client else 'unknown'}"
            wait = limit.wait_seconds(state["rate_key"])
            if wait > 0:
                self.refused("rate")
                await _refuse(
                    send,
                    429,
                    "rate_limited",
                    f"more than {int(limit.capacity)} requests a minute from "
                    f"{who or 'this address'}; retry in {math.ceil(wait)} s",
                    [(b"retry-after", str(math.ceil(wait)).encode())],
                )
                return  # fmt: skip
        await self.app(scope, receive, send)
