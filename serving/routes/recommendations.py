"""Personalised recommendations for a user, and for an anonymous session."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from serving.deps import CategoryQuery, K, ServicesDep, UserIdPath
from serving.responses import render
from serving.schemas import AnonymousRequest, ErrorOut, RecommendationList, UserRecommendations

router = APIRouter(tags=["recommendations"],
                   responses={422: {"model": ErrorOut, "description": "bad parameters"}})


@router.get("/v1/users/{user_id}/recommendations", response_model=UserRecommendations,
            summary="Personalised top-k for a user")
async def user_recommendations(
    services: ServicesDep,
    user_id: UserIdPath,
    k: K,
    category: CategoryQuery = None,
    exclude_seen: Annotated[bool, Query(description="Leave out items the user has seen.")]
    = True,
) -> UserRecommendations:
    result = await services.recommender.for_user(user_id, k, exclude_seen, category)
    return await render(result, services.catalog, services.metrics, "user",
                        user_id=user_id)  # type: ignore[return-value]


@router.post("/v1/recommendations/anonymous", response_model=RecommendationList,
             summary="Recommendations for a visitor without id, from their session")
async def anonymous_recommendations(
    services: ServicesDep, body: AnonymousRequest, k: K, category: CategoryQuery = None,
) -> RecommendationList:
    limit = services.settings.api_max_anonymous_items
    if len(body.items) > limit:
        raise HTTPException(422, f"at most {limit} items per session; got {len(body.items)}")
    result = await services.recommender.anonymous(body.items, k, category)
    return await render(result, services.catalog, services.metrics,
                        "anonymous")  # type: ignore[return-value]
