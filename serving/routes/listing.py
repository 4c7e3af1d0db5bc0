"""Listings: a user's known items and the catalogue, paged."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field
from redis.exceptions import RedisError

from recsys.catalog_codec import item_fields
from recsys.item_attributes import ItemAttributes
from serving.deps import CategoryQuery, Limit, ServicesDep, UserIdPath
from serving.responses import OrjsonResponse
from serving.schemas import CatalogItemOut, ErrorOut

router = APIRouter(responses={422: {"model": ErrorOut, "description": "bad parameters"}})

# A listing offset only skips entries of an in-memory list or a Redis range.
MAX_LIST_OFFSET = 10_000_000
ListOffset = Annotated[int, Query(ge=0, le=MAX_LIST_OFFSET,
                                  description="Skip this many entries (paging).")]


class KnownItem(BaseModel):
    item_id: str
    last_seen_ms: int = Field(description="The user's last interaction with it (epoch ms).")
    in_model: bool = Field(description="Whether the served model knows the item.")


class UserItems(BaseModel):
    user_id: str
    model_version: str | None
    total: int = Field(description="How many items the user has in the seen set.")
    excluded_up_to: int = Field(
        description="Recommendations leave out the most recent api_max_seen of them "
        "(exclude_seen); this is that number.")
    offset: int
    limit: int
    items: list[KnownItem] = Field(description="Most recent first.")


class CatalogPage(BaseModel):
    total: int = Field(description="Items in the catalogue (of the category, if given).")
    offset: int
    limit: int
    items: list[CatalogItemOut] = Field(description="Ordered by item id.")


@router.get(
    "/v1/users/{user_id}/items", response_model=UserItems, tags=["users"],
    responses={503: {"model": ErrorOut, "description": "Redis unavailable"}},
    summary="The items the model counts as seen by a user",
    description="The user's seen set (what `exclude_seen` leaves out, and what the stream "
    "folds in), most recent first, paged.")
async def user_items(services: ServicesDep, user_id: UserIdPath, limit: Limit,
                     offset: ListOffset = 0) -> UserItems:
    key = services.keys.seen(user_id)
    try:
        pipe = services.redis.pipeline(transaction=False)
        pipe.zcard(key)
        pipe.zrevrange(key, offset, offset + limit - 1, withscores=True)
        total, pairs = await pipe.execute()
    except (RedisError, OSError) as exc:
        services.guard.failed("user_items", exc)
        raise HTTPException(503, "Redis is unavailable; retry") from None
    model = services.holder.current
    index = model.index if model is not None else {}
    items = [{"item_id": (item := member.decode()), "last_seen_ms": int(score),
              "in_model": item in index} for member, score in pairs]
    return OrjsonResponse({  # type: ignore[return-value]
        "user_id": user_id, "model_version": model.version if model else None,
        "total": int(total), "excluded_up_to": min(int(total), services.settings.api_seen_max),
        "offset": offset, "limit": limit, "items": items})


@router.get(
    "/v1/items", response_model=CatalogPage, tags=["items"],
    summary="The catalogue, paged",
    description="Catalogue items ordered by id (stable pages while the catalogue does not "
    "change), with their details.")
async def list_items(services: ServicesDep, limit: Limit, offset: ListOffset = 0,
                     category: CategoryQuery = None) -> CatalogPage:
    catalog = services.catalog
    ids = catalog.sorted_ids(category)
    page = ids[offset:offset + limit]
    try:
        found = await catalog.get_many(page)
    except (RedisError, OSError) as exc:
        services.guard.failed("catalog_list", exc)
        raise HTTPException(503, "the catalog store (Redis) is unavailable; retry") from None
    # Every field present, null when not stored (as GET /v1/items/{item_id} answers).
    items = [{"item_id": item_id, **item_fields(item or ItemAttributes(item_id))}
             for item_id, item in zip(page, found, strict=True)]
    return OrjsonResponse({"total": len(ids), "offset": offset,  # type: ignore[return-value]
                           "limit": limit, "items": items})
