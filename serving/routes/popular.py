"""Real-time trending items, from the stream's popularity counters."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from serving.deps import (
    NO_RULES,
    Filters,
    K,
    RuleQueryDep,
    ServicesDep,
    SessionQuery,
    reranker,
    rule_request,
)
from serving.experiments import recommend
from serving.responses import render
from serving.schemas import PLACEMENT_UNAVAILABLE, ErrorOut, PopularItems

router = APIRouter(tags=["recommendations"],
                   responses={422: {"model": ErrorOut, "description": "bad parameters"},
                              503: PLACEMENT_UNAVAILABLE})


@router.get("/v1/popular", response_model=PopularItems, summary="Trending items")
async def popular(
    services: ServicesDep,
    k: K,
    filters: Filters,
    window: Annotated[Literal["1h", "24h", "7d"], Query(description="Trending window.")] = "24h",
    session_id: SessionQuery = None,
    rules: RuleQueryDep = NO_RULES,
) -> PopularItems:
    ruled = reranker(services, await rule_request(services, rules, k), filters)
    depth = k if ruled is None else ruled.pool
    # Not part of an experiment (it is the popularity list already), but recorded.
    result, served = await recommend(
        services, "popular", session_id, depth, filters,
        lambda _control: services.recommender.popular(depth, window, filters),
        in_experiment=False, finish=ruled)
    return await render(result, services.catalog, services.metrics, "popular",
                        ruled.members() if ruled else None,
                        window=window, **served)  # type: ignore[return-value]
