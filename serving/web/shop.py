"""The storefront's JSON API: who the visitor is, catalogue pages, events, placeholder images.

The visitor is a cookie: an anonymous id (`anon-<random>`) until they "log in" as a demo
user, which only changes the id the cookie holds. There is no password: these are demo
shoppers. Events are bound to the cookie on the server: the browser names only the item
and the event type; the user id, the event id and the timestamp are set here (never
trusting a client's clock or ids), and the event is validated and produced exactly as
`POST /v1/events` does. That route needs the write key when one is configured, which a
public storefront page cannot hold.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import html
import secrets
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Cookie, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict
from redis.exceptions import RedisError

from recsys.catalog_codec import item_fields
from recsys.events import InvalidEvent
from recsys.eventtime import now_ms
from serving.deps import ItemIdPath, ServicesDep, plain_id
from serving.responses import OrjsonResponse
from serving.routes.events import check_event, produce
from serving.schemas import Id

router = APIRouter(prefix="/shop/api", include_in_schema=False)

VISITOR_COOKIE = "recsys_visitor"
COOKIE_MAX_AGE_S = 30 * 86_400
MAX_PAGE = 60
HOME_CATEGORIES = 8
MAX_NAV_CATEGORIES = 50


def _new_anonymous_id() -> str:
    return f"anon-{secrets.token_hex(8)}"


def _set_visitor(response: Response, request: Request, user_id: str) -> None:
    response.set_cookie(VISITOR_COOKIE, user_id, max_age=COOKIE_MAX_AGE_S, httponly=False,
                        samesite="lax", secure=request.url.scheme == "https")


def _visitor(cookie: str | None) -> str | None:
    return cookie if cookie is not None and plain_id(cookie) else None


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: Id


class ShopEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: Id
    event_type: Literal["click", "view", "addtocart", "transaction"]


@router.get("/me")
async def me(request: Request,
             visitor: Annotated[str | None, Cookie(alias=VISITOR_COOKIE)] = None) -> Response:
    """The visitor's id; a new anonymous one (and its cookie) when there is none yet."""
    user_id = _visitor(visitor)
    fresh = user_id is None
    user_id = user_id or _new_anonymous_id()
    response = OrjsonResponse({"user_id": user_id, "anonymous": user_id.startswith("anon-")})
    if fresh:
        _set_visitor(response, request, user_id)
    return response


@router.post("/login")
async def login(request: Request, body: Login) -> Response:
    response = OrjsonResponse({"user_id": body.user_id, "anonymous": False})
    _set_visitor(response, request, body.user_id)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    user_id = _new_anonymous_id()
    response = OrjsonResponse({"user_id": user_id, "anonymous": True})
    _set_visitor(response, request, user_id)
    return response


@router.post("/events", status_code=202)
async def shop_event(services: ServicesDep, body: ShopEvent,
                     visitor: Annotated[str | None, Cookie(alias=VISITOR_COOKIE)] = None
                     ) -> Response:
    user_id = _visitor(visitor)
    if user_id is None:
        raise HTTPException(400, f"no visitor: the {VISITOR_COOKIE} cookie is missing or "
                                 "invalid (GET /shop/api/me sets one)")
    try:
        event = check_event({"event_id": uuid.uuid4().hex, "user_id": user_id,
                             "item_id": body.item_id, "event_type": body.event_type,
                             "timestamp": now_ms()})
    except InvalidEvent as exc:
        services.metrics.events.labels("rejected", str(exc.reason)).inc()
        raise HTTPException(422, exc.as_dict()) from None
    produce(services, [event])
    services.metrics.events.labels("accepted", "").inc()
    return OrjsonResponse({"accepted": 1, "event_id": event.event_id, "user_id": user_id},
                          status_code=202)


@router.get("/catalog")
async def catalog_page(
    services: ServicesDep,
    category: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 8,
) -> Response:
    """The largest categories with their sizes, and the first `limit` available items (by id)
    of each of the first HOME_CATEGORIES of them, or of the one `category` asked for.

    Bounded for big catalogues: at most MAX_NAV_CATEGORIES names, and a partial selection
    (heapq) rather than a sort of each category."""
    catalog = services.catalog
    by_category = catalog.by_category
    names = sorted((c for c in by_category if c), key=lambda c: (-len(by_category[c]), c))
    chosen = [category] if category is not None else names[:HOME_CATEGORIES]
    unavailable = catalog.unavailable
    picked = [item for c in chosen
              for item in heapq.nsmallest(limit, (i for i in by_category.get(c, ())
                                                  if i not in unavailable))]
    try:
        details = await asyncio.gather(*(catalog.get(item) for item in picked))
    except (RedisError, OSError) as exc:
        services.guard.failed("catalog_get", exc)
        raise HTTPException(503, "the catalog store (Redis) is unavailable; retry") from None
    items: list[dict[str, Any]] = [{"item_id": item, **(item_fields(detail) if detail else {})}
                                   for item, detail in zip(picked, details, strict=True)]
    return OrjsonResponse({"categories": [{"category": c, "count": len(by_category[c])}
                                          for c in names[:MAX_NAV_CATEGORIES]],
                           "items": items})


def _hue(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=2).digest()) % 360


@router.get("/img/{item_id}.svg")
async def placeholder_image(item_id: ItemIdPath,
                            category: Annotated[str | None, Query(max_length=128)] = None
                            ) -> Response:
    """A generated placeholder for items without an image: colour by category, the id."""
    hue = _hue(category or item_id)
    label = html.escape(item_id[:24])
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 160 120" role="img" '
           f'aria-label="{label}"><rect width="160" height="120" '
           f'fill="hsl({hue} 45% 88%)"/><circle cx="80" cy="52" r="26" '
           f'fill="hsl({hue} 50% 62%)"/><text x="80" y="106" font-family="sans-serif" '
           f'font-size="12" text-anchor="middle" fill="hsl({hue} 40% 25%)">{label}</text>'
           f'</svg>')
    return Response(svg, media_type="image/svg+xml",
                    headers={"Cache-Control": "public, max-age=86400"})
