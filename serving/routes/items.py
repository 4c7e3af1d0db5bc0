"""Items: similar items (from the served version) and the catalog."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Response
from redis.exceptions import RedisError

from recsys.catalog_codec import item_fields
from recsys.item_attributes import InvalidItemAttributes
from serving.deps import (
    NO_RULES,
    Filters,
    ItemIdPath,
    K,
    RuleQueryDep,
    ServicesDep,
    SessionQuery,
    WriteAccess,
    reranker,
    rule_request,
)
from serving.experiments import recommend
from serving.recommender import ItemNotFound
from serving.responses import OrjsonResponse, render
from serving.schemas import (
    MAX_CATALOG_BATCH,
    PLACEMENT_UNAVAILABLE,
    CatalogBatchOut,
    CatalogEntryIn,
    CatalogItemIn,
    CatalogItemOut,
    ErrorOut,
    SimilarItems,
)

router = APIRouter(tags=["items"],
                   responses={422: {"model": ErrorOut, "description": "bad parameters"}})


@router.get("/v1/items/{item_id}/similar", response_model=SimilarItems,
            responses={404: {"model": ErrorOut, "description": "unknown item"},
                       503: PLACEMENT_UNAVAILABLE},
            summary="Items similar to an item")
async def similar_items(services: ServicesDep, item_id: ItemIdPath, k: K, filters: Filters,
                        session_id: SessionQuery = None,
                        rules: RuleQueryDep = NO_RULES) -> SimilarItems:
    ruled = reranker(services, await rule_request(services, rules, k), filters)
    depth = k if ruled is None else ruled.pool
    try:
        result, served = await recommend(services, "similar", session_id, depth, None,
                                         lambda _control: services.recommender.similar(
                                             item_id, depth, filters),
                                         finish=ruled)
    except ItemNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    return await render(result, services.catalog, services.metrics, "similar",
                        ruled.members() if ruled else None,
                        item_id=item_id, **served)  # type: ignore[return-value]


@router.put("/v1/items/{item_id}", response_model=CatalogItemOut, dependencies=[WriteAccess],
            responses={401: {"model": ErrorOut}, 503: {"model": ErrorOut}},
            summary="Create or replace a catalog item")
async def put_item(services: ServicesDep, item_id: ItemIdPath, body: CatalogItemIn
                   ) -> CatalogItemOut:
    try:
        item = body.to_attributes(item_id)
    except InvalidItemAttributes as exc:
        raise HTTPException(422, f"{exc.field}: {exc.reason}") from None
    try:
        stored = await services.catalog.put(item)
    except (RedisError, OSError) as exc:
        services.guard.failed("catalog_put", exc)
        raise HTTPException(503, "the catalog store (Redis) is unavailable; retry") from None
    return OrjsonResponse({"item_id": item_id, **item_fields(stored)})  # type: ignore[return-value]


@router.put("/v1/items", response_model=CatalogBatchOut, dependencies=[WriteAccess],
            responses={401: {"model": ErrorOut}, 503: {"model": ErrorOut}},
            summary="Create or replace many catalog items at once",
            description=f"A JSON array of items (1..{MAX_CATALOG_BATCH}), each the body of "
            "`PUT /v1/items/{item_id}` plus its `item_id`. Validated as a whole (one bad "
            "item: 422 and nothing is written) and written atomically; replicas reload the "
            "catalog once per batch. A later entry for the same id wins.")
async def put_items(
    services: ServicesDep,
    body: Annotated[list[CatalogEntryIn],
                    Body(min_length=1, max_length=MAX_CATALOG_BATCH)],
) -> CatalogBatchOut:
    items = []
    for index, entry in enumerate(body):
        try:
            items.append(entry.to_attributes(entry.item_id))
        except InvalidItemAttributes as exc:
            raise HTTPException(422, f"[{index}] (item {entry.item_id!r}).{exc.field}: "
                                f"{exc.reason}") from None
    try:
        stored = await services.catalog.put_many(items)
    except (RedisError, OSError) as exc:
        services.guard.failed("catalog_put", exc)
        raise HTTPException(503, "the catalog store (Redis) is unavailable; retry") from None
    return OrjsonResponse({  # type: ignore[return-value]
        "stored": len(stored),
        "items": [{"item_id": item.item_id, **item_fields(item)} for item in stored]})


@router.get("/v1/items/{item_id}", response_model=CatalogItemOut,
            responses={404: {"model": ErrorOut}, 503: {"model": ErrorOut}},
            summary="A catalog item")
async def get_item(services: ServicesDep, item_id: ItemIdPath) -> CatalogItemOut:
    try:
        item = await services.catalog.get(item_id)
    except (RedisError, OSError) as exc:
        services.guard.failed("catalog_get", exc)
        raise HTTPException(503, "the catalog store (Redis) is unavailable; retry") from None
    if item is None:
        raise HTTPException(404, f"item {item_id!r} is not in the catalog")
    return OrjsonResponse({"item_id": item_id, **item_fields(item)})  # type: ignore[return-value]


@router.delete("/v1/items/{item_id}", status_code=204, dependencies=[WriteAccess],
               responses={401: {"model": ErrorOut}, 503: {"model": ErrorOut}},
               summary="Remove an item from the catalogue and from every answer",
               description="Deletes the catalogue entry and the item's popularity, and marks "
               "it removed: no model version recommends it and the trainer drops it from "
               "every training set (recsys.erasure). A later PUT re-creates it.")
async def delete_item(services: ServicesDep, item_id: ItemIdPath) -> Response:
    current, previous = await _versions(services)
    try:
        await services.catalog.remove(item_id, [v for v in [current, *previous] if v])
    except (RedisError, OSError) as exc:
        services.guard.failed("catalog_delete", exc)
        raise HTTPException(503, "the catalog store (Redis) is unavailable; retry") from None
    return Response(status_code=204)


async def _versions(services: ServicesDep) -> tuple[str | None, list[str]]:
    try:
        current = await services.redis.get(services.keys.current_model)
        previous = await services.redis.lrange(services.keys.previous_models, 0, -1)
    except (RedisError, OSError) as exc:
        services.guard.failed("catalog_delete", exc)
        raise HTTPException(503, "the catalog store (Redis) is unavailable; retry") from None
    return (current.decode() if current else None), [p.decode() for p in previous]
