"""HTML pages and the offline API docs.

FastAPI's own /docs loads Swagger UI from a CDN, which leaves the page blank on a machine
without internet. The assets come instead from the `fastapi-offline` wheel (Swagger UI and
ReDoc bundles as package data) and are served by the API itself.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from redis.exceptions import RedisError

from serving.deps import ItemIdPath

STATIC_DIR = Path(__file__).parent / "static"
DOCS_ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
DOCS_ASSETS_URL = "/docs-assets"
WEB_ASSETS_URL = "/web"

router = APIRouter(include_in_schema=False)

# The pages load nothing from elsewhere; the browser enforces it. Catalogue images may live on
# the shop's own image host (https). The docs pages need their inline start-up scripts, and
# ReDoc's "powered by" logo would otherwise come from its vendor's CDN.
PAGE_CSP = ("default-src 'self'; img-src 'self' data: https:; object-src 'none'; "
            "base-uri 'self'; frame-ancestors 'self'")
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; "
            "style-src 'self' 'unsafe-inline'; img-src 'self' data:; worker-src 'self' blob:; "
            "object-src 'none'; base-uri 'self'")


def page(name: str, status_code: int = 200) -> Response:
    # The pages are static files; the browser revalidates them (ETag) rather than caching a
    # stale copy across deployments.
    response = FileResponse(STATIC_DIR / name, media_type="text/html; charset=utf-8",
                            status_code=status_code)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["Content-Security-Policy"] = PAGE_CSP
    return response


def not_found_page() -> Response:
    return page("404.html", status_code=404)


@router.get("/")
async def storefront() -> Response:
    return page("index.html")


@router.get("/product/{item_id}")
async def product_page(request: Request, item_id: ItemIdPath) -> Response:
    services = request.app.state.services
    try:
        known = services is not None and await services.catalog.exists(item_id)
    except (RedisError, OSError):
        known = True  # let the page try; its API calls report what is unavailable
    return page("product.html") if known else not_found_page()


@router.get("/admin")
async def admin_console() -> Response:
    return page("admin.html")


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    app = request.app
    response = get_swagger_ui_html(
        openapi_url=str(app.openapi_url), title=f"{app.title} - Swagger UI",
        swagger_js_url=f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{DOCS_ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{DOCS_ASSETS_URL}/favicon.png")
    response.headers["Content-Security-Policy"] = DOCS_CSP
    return response


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    app = request.app
    response = get_redoc_html(
        openapi_url=str(app.openapi_url), title=f"{app.title} - ReDoc",
        redoc_js_url=f"{DOCS_ASSETS_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{DOCS_ASSETS_URL}/favicon.png", with_google_fonts=False)
    response.headers["Content-Security-Policy"] = DOCS_CSP
    return response


def wants_html(request: Request) -> bool:
    """A browser navigating to a page, not an API client (those keep JSON errors)."""
    path = request.url.path
    if path.startswith(("/v1/", "/shop/api/")) or path in ("/metrics", "/healthz", "/readyz"):
        return False
    return "text/html" in request.headers.get("accept", "")


def mount_web(app: FastAPI) -> None:
    """Pages and assets, after every /v1 route (Starlette matches routes in order)."""
    from serving.web import shop

    app.include_router(router)
    app.include_router(shop.router)
    app.mount(WEB_ASSETS_URL, StaticFiles(directory=STATIC_DIR), name="web")
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=DOCS_ASSETS_DIR), name="docs-assets")

