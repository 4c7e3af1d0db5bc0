"""The classic e-commerce recommender API: GET /api/recommendations, POST /api/feedback."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from recsys.events import MAX_ID_LENGTH, Event, InvalidEvent
from serving.deps import K, ServicesDep, WriteAccess
from serving.responses import OrjsonResponse
from serving.routes.events import produce
from serving.schemas import ID_PATTERN, ClassicRecommendations, ErrorOut, Feedback, FeedbackAccepted

router = APIRouter(tags=["classic API"],
                   responses={422: {"model": ErrorOut, "description": "bad parameters"}})


@router.get("/api/recommendations", response_model=ClassicRecommendations,
            summary="Recommendations for a user (classic shape)")
async def classic_recommendations(
    services: ServicesDep,
    user_id: Annotated[str, Query(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)],
    k: K,
) -> ClassicRecommendations:
    result = await services.recommender.for_user(user_id, k)
    services.metrics.count_response("classic", result.source)
    return OrjsonResponse({  # type: ignore[return-value]
        "user_id": user_id,
        "recommendations": [{"product_id": item, "score": score} for item, score in result.items],
        "model_version": result.model_version,
        "source": result.source,
    })


@router.post("/api/feedback", status_code=202, response_model=FeedbackAccepted,
             dependencies=[WriteAccess], summary="A rating from a user (classic shape)",
             responses={401: {"model": ErrorOut}, 503: {"model": ErrorOut}})
async def classic_feedback(services: ServicesDep, body: Feedback) -> FeedbackAccepted:
    try:
        event = Event.create(body.user_id, body.product_id, "rating", value=body.rating)
    except InvalidEvent as exc:
        services.metrics.events.labels("rejected", str(exc.reason)).inc()
        raise HTTPException(422, str(exc)) from None
    produce(services, [event])
    services.metrics.events.labels("accepted", "").inc()
    return OrjsonResponse({"status": "accepted", "event_id": event.event_id},  # type: ignore[return-value]
                          status_code=202)
