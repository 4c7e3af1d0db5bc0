"""Recommendations for many users in one request (e-mail campaigns, precomputed lists)."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, HTTPException, Response
from pydantic import BaseModel, ConfigDict, Field

from recsys.item_filter import category_filter
from serving.business import for_users
from serving.deps import DEFAULT_K, ServicesDep
from serving.responses import render
from serving.schemas import ErrorOut, Id, UserRecommendations

router = APIRouter(tags=["recommendations"],
                   responses={422: {"model": ErrorOut, "description": "bad parameters"}})

# The schema's own bound; the route applies the setting api_max_batch_users.
MAX_BATCH_USERS_LIMIT = 10_000


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_ids: list[Id] = Field(min_length=1, max_length=MAX_BATCH_USERS_LIMIT,
                               description="Users (at most api_max_batch_users).")
    k: int = Field(default=DEFAULT_K, ge=1, description="Items per user: 1..api_max_k.")
    exclude_seen: bool = Field(default=True, description="Leave out items each user has seen.")
    category: Id | None = Field(default=None, description="Only items of this category.")


class BatchOut(BaseModel):
    results: list[UserRecommendations] = Field(
        description="One list per requested user, in request order; each is what "
        "GET /v1/users/{user_id}/recommendations answers (fallbacks included).")


@router.post(
    "/v1/recommendations/batch", response_model=BatchOut,
    summary="Personalised top-k for many users",
    description="The personalised lists of many users at once. The users' vectors are read "
    "in one Redis round trip and scored in one matrix product (Y [x_1 .. x_B]), which costs "
    "far less than B single requests; users the model cannot answer get the usual fallbacks "
    "(`source` says which). Each list has its own `recommendation_id` and is recorded as an "
    "impression (endpoint `batch`); batch lists are never part of an experiment.")
async def batch_recommendations(services: ServicesDep, body: BatchIn) -> BatchOut:
    settings = services.settings
    if len(body.user_ids) > settings.api_max_batch_users:
        raise HTTPException(422, f"user_ids: at most {settings.api_max_batch_users} users; "
                            f"got {len(body.user_ids)}")
    if body.k > settings.api_max_k:
        raise HTTPException(422, f"k must be between 1 and {settings.api_max_k}; got {body.k}")
    results = await for_users(services.recommender, body.user_ids, body.k, body.exclude_seen,
                              category_filter(body.category))
    # Each user's list is an impression of its own, outside experiments: a campaign sends
    # the model's lists, and a click on one is attributed to it like any other.
    parts = [orjson.Fragment(bytes((await render(
        result, services.catalog, services.metrics, "batch", user_id=user,
        recommendation_id=services.impressions.record(services.producer, "batch", result,
                                                      user),
        variant=None)).body))
             for user, result in zip(body.user_ids, results, strict=True)]
    return Response(orjson.dumps({"results": parts}),  # type: ignore[return-value]
                    media_type="application/json")
