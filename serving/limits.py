"""Bounded requests: body size and requests in flight, checked before any parsing.

`RequestLimits` is a plain ASGI middleware (no per-request objects beyond a closure when a
body is read), so its cost on the hot path is an integer compare and a header lookup:

- **Body size.** A `Content-Length` above `api_max_body_bytes` is answered 413 before a byte
  of the body is read. A body without one (chunked) is counted while it streams: past the
  bound the read fails with 413 and the rest is never buffered. Memory per request is thus
  bounded by the setting, whatever the client says or sends.
- **In flight.** Past `api_max_in_flight` requests being handled at once, a new request is
  answered 503 with Retry-After at once, instead of queueing behind the saturated loop (the
  latency of the ones in flight stays bounded). Health and metrics endpoints are exempt: an
  orchestrator must not restart a process because it is busy.
"""

from __future__ import annotations

import orjson
from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recsys.settings import Settings
from serving.telemetry import ApiMetrics

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class BodyTooLarge(HTTPException):
    """Raised from `receive` once a streamed body passes the bound. An HTTPException, so
    FastAPI's body reading lets it through to the exception middleware as a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than {limit} bytes")


async def _answer(send: Send, status: int, detail: str,
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = orjson.dumps({"detail": detail})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class RequestLimits:
    def __init__(self, app: ASGIApp, settings: Settings, metrics: ApiMetrics) -> None:
        self.app = app
        self.max_body = settings.api_max_body_bytes
        self.max_in_flight = settings.api_max_in_flight
        self.retry_after = str(settings.api_retry_after_s).encode()
        self.metrics = metrics
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight and scope["path"] not in EXEMPT_PATHS:
            self.metrics.limited.labels("in_flight").inc()
            await _answer(send, 503, f"the API is at its limit of {self.max_in_flight} "
                          "requests in flight; retry shortly",
                          [(b"retry-after", self.retry_after)])
            return
        length = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
                break
        if length is not None:
            try:
                too_large = int(length) > self.max_body
            except ValueError:
                await _answer(send, 400, "Content-Length is not a number")
                return
            if too_large:
                self.metrics.limited.labels("body_size").inc()
                await _answer(send, 413, f"request body is larger than {self.max_body} bytes "
                              f"(Content-Length {int(length)})")
                return
        elif scope["method"] in ("POST", "PUT", "PATCH"):
            # No declared length (chunked): counted while it streams.
            self.in_flight += 1
            try:
                await self._call_counting(scope, receive, send)
            finally:
                self.in_flight -= 1
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _call_counting(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, self._counting(receive), send_tracking)
        except BodyTooLarge as exc:
            # Raised outside a route (a middleware reading the body): answer here.
            if started:
                raise
            await _answer(send, 413, str(exc.detail))

    def _counting(self, receive: Receive) -> Receive:
        limit, seen = self.max_body, 0
        metrics = self.metrics

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    metrics.limited.labels("body_size").inc()
                    raise BodyTooLarge(limit)
            return message

        return counted
