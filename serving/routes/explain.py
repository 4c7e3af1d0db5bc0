"""Explanations: which of the user's items made an item's score."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from serving.business import (
    NotExplainable,
    NotFound,
    Unavailable,
    because,
    read_users,
    served_model,
)
from serving.deps import ItemIdPath, K, ServicesDep, UserIdPath
from serving.responses import OrjsonResponse
from serving.schemas import ErrorOut

router = APIRouter(tags=["recommendations"],
                   responses={422: {"model": ErrorOut, "description": "bad parameters"}})


class Contribution(BaseModel):
    item_id: str = Field(description="An item of the user's history (seen set).")
    contribution: float = Field(description="Its share of the score: c_j y_i^T A^-1 y_j.")
    confidence: float = Field(description="The confidence c_j implied by the user's vector.")


class Because(BaseModel):
    user_id: str
    item_id: str
    model_version: str
    score: float = Field(description="The item's score for the user, y_i^T x_u.")
    explained_score: float = Field(
        description="Sum of all contributions (not only the k listed); equals `score` when "
        "the user's vector is the fold-in over their seen items.")
    residual: float = Field(
        description="Relative residual of the implied confidences: ~0 when the vector is a "
        "fold-in over the seen items; larger for a vector the trainer fitted, or a history "
        "that differs from the seen set (the contributions are then approximate).")
    items: list[Contribution] = Field(description="Largest contribution first, at most k.")


@router.get(
    "/v1/users/{user_id}/recommendations/{item_id}/because", response_model=Because,
    responses={404: {"model": ErrorOut, "description": "user or item unknown to the model"},
               409: {"model": ErrorOut, "description": "the served version is neural"},
               503: {"model": ErrorOut, "description": "no model, or Redis unavailable"}},
    summary="Why an item is recommended to a user",
    description="The user's items that contributed most to the item's score in the served "
    "ALS model (\"because you viewed X\"). The fold-in makes the score a sum over the user's "
    "items, score = sum_j c_j y_i^T A^-1 y_j with A = YtY + lambda I + Yu^T (Cu - I) Yu; the "
    "confidences c_j are recovered from the user's stored vector (recsys.explain). Works "
    "for any item of the model, recommended or not.")
async def because_route(services: ServicesDep, user_id: UserIdPath, item_id: ItemIdPath,
                        k: K) -> Because:
    rec = services.recommender
    try:
        model = served_model(rec)
        (user,) = await read_users(rec, model, [user_id])
        body = because(model, user, item_id, k)
    except Unavailable as exc:
        raise HTTPException(503, str(exc)) from None
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except NotExplainable as exc:
        raise HTTPException(409, str(exc)) from None
    services.metrics.count_response("because", "personalized")
    return OrjsonResponse(body)  # type: ignore[return-value]
