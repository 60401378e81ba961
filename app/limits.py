"""A request body limit that every HTTP client hears as a 413 JSON answer, not as a reset connection.

Answering 413 without reading an oversized body makes the server close the socket while the client is still
sending, and curl, requests, httpx and urllib then report a broken pipe or a reset instead of the answer. So a body
over the limit is read and thrown away, however large (nothing of it is kept: it costs the bandwidth only), before
the answer goes out with ``Connection: close``. Bodies without a Content-Length
(chunked) are counted as they arrive: past the limit the application sees the body end there, and whatever it
answers is replaced by the 413.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    """ASGI middleware: request bodies larger than ``limit()`` bytes, plus ``slack`` for the multipart envelope
    and form fields, get a 413 JSON error."""

    def __init__(self, app: ASGIApp, limit: Callable[[], int], slack: int = 64 * 1024) -> None:
        self.app = app
        self.limit = limit
        self.slack = slack

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        stated = self.limit()
        limit = stated + self.slack
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _drain(receive)
            await _too_large(send, f"the request has {int(declared)} bytes; the limit is {stated} bytes")
            return
        received = 0
        over = False
        started = False

        async def counted() -> Message:
            nonlocal received, over
            if over:
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    if message.get("more_body"):
                        await _drain(receive)
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if over:
                if not started:
                    started = True
                    await _too_large(send, f"the request body is larger than the limit of {stated} bytes")
                return
            await send(message)

        await self.app(scope, counted, guarded)


async def _drain(receive: Receive) -> None:
    """Read and drop the rest of the body (until its end or the client's disconnect)."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            return


async def _too_large(send: Send, detail: str) -> None:
    body = json.dumps({"error": "file_too_large", "detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
