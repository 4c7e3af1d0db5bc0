"""Scores of a list the shop chose (re-ranking its own search results)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from serving.business import Unavailable, read_users, scores_of, served_model
from serving.deps import ServicesDep, UserIdPath
from serving.responses import OrjsonResponse
from serving.schemas import ErrorOut, Id

router = APIRouter(tags=["recommendations"],
                   responses={422: {"model": ErrorOut, "description": "bad parameters"}})

# The schema's own bound; the route applies the setting api_max_score_items.
MAX_SCORE_ITEMS_LIMIT = 100_000


class ScoresIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_ids: list[Id] = Field(min_length=1, max_length=MAX_SCORE_ITEMS_LIMIT,
                               description="Items to score (at most api_max_score_items).")


class ItemScore(BaseModel):
    item_id: str
    score: float | None = Field(description="y_i^T x_u; null for an item the model does not "
                                "know or a user without a vector.")
    known: bool = Field(description="Whether the served model knows the item.")


class Scores(BaseModel):
    user_id: str
    model_version: str
    source: str = Field(description="personalized, or none:<reason> (unknown_user, "
                        "no_user_vector, bad_user_vector) when the user has no usable vector "
                        "and every score is null.")
    items: list[ItemScore] = Field(description="In request order.")


@router.post(
    "/v1/users/{user_id}/scores", response_model=Scores,
    responses={503: {"model": ErrorOut, "description": "no model, or Redis unavailable"}},
    summary="Scores of given items for a user",
    description="The served model's score of each given item for the user, in request "
    "order, with unknown items marked (`known: false`, `score: null`). No catalogue filters "
    "apply: the caller chose the list.")
async def user_scores(services: ServicesDep, user_id: UserIdPath, body: ScoresIn) -> Scores:
    bound = services.settings.api_max_score_items
    if len(body.item_ids) > bound:
        raise HTTPException(422, f"item_ids: at most {bound} items; got {len(body.item_ids)}")
    rec = services.recommender
    try:
        model = served_model(rec)
        (user,) = await read_users(rec, model, [user_id], seen_max=1)
    except Unavailable as exc:
        raise HTTPException(503, str(exc)) from None
    out = scores_of(model, user, body.item_ids)
    services.metrics.count_response("scores", out["source"])
    return OrjsonResponse(out)  # type: ignore[return-value]
