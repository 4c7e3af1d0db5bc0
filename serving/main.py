"""The FastAPI app factory: `create_app(settings)`.

Nothing connects at import or construction time; the lifespan creates the Redis client, the
model holder (and its background loader), the catalog and the Kafka producer, and closes
them at shutdown.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recsys.errors import ConfigError
from recsys.settings import Settings, get_settings
from serving.limits import RequestLimits
from serving.responses import OrjsonResponse
from serving.routes import (
    admin,
    batch,
    compat,
    events,
    experiments,
    explain,
    health,
    items,
    listing,
    placements,
    popular,
    recommendations,
    scores,
    users,
)
from serving.state import Services
from serving.telemetry import ApiMetrics
from serving.web.pages import mount_web, not_found_page, wants_html

log = logging.getLogger(__name__)

API_VERSION = "1.0"


class MetricsMiddleware:
    """Request latency by route template (not raw path: bounded labels) and status."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(scope["method"], template, status,
                                         time.perf_counter() - start)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "; ".join(parts)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_write_access(settings: Settings, host: str) -> None:
    """Refuse to serve open write endpoints beyond this machine: a non-loopback bind needs an
    api_key, or the explicit opt-out api_allow_open_writes."""
    if settings.api_key is None and not is_loopback(host) and not settings.api_allow_open_writes:
        raise ConfigError(
            f"refusing to serve on {host} without an API key: anyone who reaches it could "
            "write events and the catalog. Set RECSYS_API_KEY, bind 127.0.0.1, or set "
            "RECSYS_API_ALLOW_OPEN_WRITES=true to accept open writes.")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    check_write_access(settings, settings.api_host)
    metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await Services.start(settings, metrics)
        app.state.services = services
        try:
            yield
        finally:
            await services.close()
            app.state.services = None
            metrics.mark_process_dead()  # multiprocess /metrics: drop this worker's live gauges

    app = FastAPI(
        title="recsys serving API",
        version=API_VERSION,
        description="Personalised, similar, popular and anonymous-session recommendations "
        "over the model version in service; event ingest; catalog. Every recommendation "
        "response says which model version and which source produced it.",
        lifespan=lifespan,
        default_response_class=OrjsonResponse,
        docs_url=None,  # served offline by serving.web (FastAPI's own loads from a CDN)
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.services = None
    for module in (recommendations, explain, scores, batch, listing, items, users, popular,
                   events, compat, health, experiments, admin, placements):
        app.include_router(module.router)
    mount_web(app)  # after the JSON routes: pages never stand before a /v1 match

    @app.exception_handler(StarletteHTTPException)
    async def _not_found(request: Request, exc: StarletteHTTPException) -> Response:
        # A browser lost on a page gets the storefront's 404; API clients keep JSON.
        if exc.status_code == 404 and wants_html(request):
            return not_found_page()
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> Response:
        # FastAPI's field list, plus one readable sentence.
        return OrjsonResponse(
            {"detail": _validation_message(exc), "errors": _jsonable(exc.errors())},
            status_code=422)

    @app.exception_handler(Exception)
    async def _last_resort(request: Request, exc: Exception) -> Response:
        metrics.unhandled_errors.inc()
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return OrjsonResponse({"detail": "internal error; it has been logged",
                               "error": type(exc).__name__}, status_code=500)

    # Added last, so it runs first: refused requests cost no routing and no parsing (they are
    # counted in recsys_api_requests_limited_total, not in the latency histogram).
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestLimits, settings=settings, metrics=metrics)
    return app


def _jsonable(errors: Any) -> Any:
    """Validation errors may carry exception objects in `ctx`; keep them printable."""
    out = []
    for err in errors:
        err = dict(err)
        if "ctx" in err:
            err["ctx"] = {k: v if isinstance(v, str | int | float | bool | None) else str(v)
                          for k, v in err["ctx"].items()}
        err.pop("input", None)
        err.pop("url", None)
        out.append(err)
    return out


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory serving.main:app_from_env` (settings from environment)."""
    return create_app(get_settings())
