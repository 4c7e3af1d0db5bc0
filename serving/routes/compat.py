"""The classic e-commerce recommender API: GET /api/recommendations, POST /api/feedback."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query

from recsys.events import MAX_ID_LENGTH, Event, InvalidEvent
from serving.deps import Filters, K, ServicesDep, WriteAccess
from serving.experiments import recommend
from serving.responses import OrjsonResponse
from serving.routes.events import produce
from serving.schemas import ID_PATTERN, ClassicRecommendations, ErrorOut, Feedback, FeedbackAccepted

router = APIRouter(tags=["classic API"],
                   responses={422: {"model": ErrorOut, "description": "bad parameters"}})


@router.get("/api/recommendations", response_model=ClassicRecommendations,
            summary="Recommendations for a user (classic shape)",
            description="The personalised list of `GET /v1/users/{user_id}/recommendations` "
            "in the classic shape: `product_id`, `score`, and the catalogue's `name` and "
            "`image_url` (null when it has none). Takes the same filters as the /v1 list "
            "routes (`category`, `category_path`, `brand`, `price_min`, `price_max`, "
            "`available`, `tag`, `attr`: every clause must hold); a bad one is a 422 naming "
            "the parameter. Seen items are left out.")
async def classic_recommendations(
    services: ServicesDep,
    user_id: Annotated[str, Query(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN,
                                  description="User id (no control characters).")],
    k: K,
    filters: Filters,
) -> ClassicRecommendations:
    result, served = await recommend(services, "classic", user_id, k, filters,
                                     lambda how: services.recommender.for_user(
                                         user_id, k, filters=filters, treatment=how))
    services.metrics.count_response("classic", result.source)
    details = await services.catalog.display([item for item, _ in result.items])
    return OrjsonResponse({  # type: ignore[return-value]
        "user_id": user_id, **served,
        "recommendations": [{"product_id": item, "score": score, "name": shown.get("name"),
                             "image_url": shown.get("image_url")}
                            for (item, score), shown in zip(result.items, details,
                                                            strict=True)],
        "model_version": result.model_version,
        "source": result.source,
    })


# Event ids of idempotent feedback: a name-based UUID of (user, key), so a retry maps to the
# same id and the stream and trainer drop the repeat; keys of different users never collide.
FEEDBACK_ID_NAMESPACE = uuid.UUID("4f0c6b52-3c1e-4d8a-9a57-52f1f7d0c1a9")


def feedback_event_id(user_id: str, key: str) -> str:
    return uuid.uuid5(FEEDBACK_ID_NAMESPACE, f"{user_id}\x1f{key}").hex


@router.post("/api/feedback", status_code=202, response_model=FeedbackAccepted,
             dependencies=[WriteAccess], summary="A rating from a user (classic shape)",
             description="With an idempotency key (header Idempotency-Key or field "
             "idempotency_key), a retry gets the same event id and counts once.",
             responses={401: {"model": ErrorOut}, 503: {"model": ErrorOut}})
async def classic_feedback(
    services: ServicesDep, body: Feedback,
    idempotency_key: Annotated[
        str | None, Header(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN,
                           description="Same key on a retry: same event id.")] = None,
) -> FeedbackAccepted:
    if (idempotency_key and body.idempotency_key
            and idempotency_key != body.idempotency_key):
        raise HTTPException(422, "the Idempotency-Key header and the idempotency_key field "
                                 "differ; send one of them")
    key = idempotency_key or body.idempotency_key
    event_id = feedback_event_id(str(body.user_id), key) if key else None
    try:
        event = Event.create(body.user_id, body.product_id, "rating", value=body.rating,
                             event_id=event_id)
    except InvalidEvent as exc:
        services.metrics.events.labels("rejected", str(exc.reason)).inc()
        raise HTTPException(422, str(exc)) from None
    produce(services, [event])
    services.metrics.events.labels("accepted", "").inc()
    return OrjsonResponse({"status": "accepted", "event_id": event.event_id},  # type: ignore[return-value]
                          status_code=202)
