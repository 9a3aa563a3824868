"""Two ASGI middlewares: a cap on request bodies, and the request metrics (count, errors, latency).

Written as plain ASGI (not Starlette's `BaseHTTPMiddleware`) so streamed responses pass through untouched and
their latency counts until the last chunk is sent.
"""

from __future__ import annotations

import json
import time
from typing import Any

from mixkit.serve.metrics import ServerMetrics

ENDPOINTS = ("/", "/health", "/metrics", "/v1/caption", "/v1/vqa", "/v1/classify", "/v1/chat/completions")


class BodyTooLarge(Exception):
    """A request body without (or with a false) Content-Length grew past the cap while being read."""


class BodyLimit:
    """413 for a body over `max_bytes`: at once from its Content-Length, else as soon as reading passes the cap
    (the endpoint turns `BodyTooLarge` into the 413)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await send_json_error(send, 413, f"the request body is {int(declared):,} bytes; this server "
                                                    f"accepts at most {self.max_bytes:,} (--max-upload-mb)")
        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(f"the request body is over {self.max_bytes:,} bytes (--max-upload-mb)")
            return message

        await self.app(scope, limited_receive, send)


async def send_json_error(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def endpoint_label(path: str) -> str:
    """A bounded set of metric labels: unknown paths are "other"."""
    if path in ENDPOINTS:
        return path
    return "/v1/apps/{app}" if path.startswith("/v1/apps/") else "other"


class RequestMetrics:
    def __init__(self, app: Any, metrics: ServerMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500  # what the client sees if the app fails before answering
        start = time.perf_counter()
        self.metrics.started()

        async def send_recording(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording)
        finally:
            self.metrics.finished(endpoint_label(scope["path"]), status, time.perf_counter() - start)
