"""Real-time trending items, from the stream's popularity counters."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from serving.deps import Filters, K, ServicesDep, SessionQuery
from serving.experiments import recommend
from serving.responses import render
from serving.schemas import ErrorOut, PopularItems

router = APIRouter(tags=["recommendations"],
                   responses={422: {"model": ErrorOut, "description": "bad parameters"}})


@router.get("/v1/popular", response_model=PopularItems, summary="Trending items")
async def popular(
    services: ServicesDep,
    k: K,
    filters: Filters,
    window: Annotated[Literal["1h", "24h", "7d"], Query(description="Trending window.")] = "24h",
    session_id: SessionQuery = None,
) -> PopularItems:
    # Not part of an experiment (it is the popularity list already), but recorded.
    result, served = await recommend(
        services, "popular", session_id, k, filters,
        lambda _control: services.recommender.popular(k, window, filters), in_experiment=False)
    return await render(result, services.catalog, services.metrics, "popular",
                        window=window, **served)  # type: ignore[return-value]
