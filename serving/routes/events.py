"""HTTP ingest: one event or a batch, validated with recsys.events, produced to Kafka."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException

from recsys.events import MAX_PAYLOAD_BYTES, Event, InvalidEvent, Reason, validate_event
from recsys.producer import ProducerError
from serving.deps import ServicesDep, WriteAccess
from serving.responses import OrjsonResponse
from serving.schemas import ErrorOut, EventsAccepted
from serving.state import Services

router = APIRouter(tags=["events"])

EVENT_EXAMPLE = {"event_id": "e-1", "user_id": "u42", "item_id": "i7", "event_type": "view",
                 "timestamp": 1_700_000_000_000}


def produce(services: Services, events: list[Event]) -> None:
    """Queue events on the producer (delivery is asynchronous). Raises 503 when it cannot."""
    if services.producer is None:
        raise HTTPException(503, "event ingest is unavailable (no Kafka producer)")
    try:
        for event in events:
            services.producer.send(event)
    except ProducerError as exc:
        raise HTTPException(503, f"cannot hand events to Kafka: {exc}") from None


def check_event(data: Any) -> Event:
    event = validate_event(data)
    size = len(event.to_json())
    if size > MAX_PAYLOAD_BYTES:
        raise InvalidEvent(Reason.OVERSIZED_PAYLOAD,
                           f"event is {size} bytes; at most {MAX_PAYLOAD_BYTES} allowed")
    return event


@router.post(
    "/v1/events", status_code=202, response_model=EventsAccepted, dependencies=[WriteAccess],
    responses={422: {"model": EventsAccepted, "description": "no event was valid"},
               401: {"model": ErrorOut}, 503: {"model": ErrorOut}},
    summary="Ingest one event or a batch",
    description="Body: one event object, or a JSON array of them. Valid events are produced "
    "to the interactions topic (keyed by user id); invalid ones are reported by index with "
    "a machine-readable reason. 202 when at least one event was accepted.",
)
async def post_events(
    services: ServicesDep,
    body: Annotated[dict[str, Any] | list[Any], Body(examples=[EVENT_EXAMPLE, [EVENT_EXAMPLE]])],
) -> EventsAccepted:
    batch = body if isinstance(body, list) else [body]
    limit = services.settings.api_max_batch_events
    if not batch:
        raise HTTPException(422, "the batch is empty")
    if len(batch) > limit:
        raise HTTPException(422, f"at most {limit} events per request; got {len(batch)}")
    accepted: list[Event] = []
    errors: list[dict[str, Any]] = []
    for index, data in enumerate(batch):
        try:
            accepted.append(check_event(data))
        except InvalidEvent as exc:
            errors.append({"index": index, **exc.as_dict()})
            services.metrics.events.labels("rejected", str(exc.reason)).inc()
    produce(services, accepted)
    if accepted:
        services.metrics.events.labels("accepted", "").inc(len(accepted))
    content = {"accepted": len(accepted), "rejected": len(errors),
               "event_ids": [e.event_id for e in accepted], "errors": errors}
    return OrjsonResponse(content, status_code=202 if accepted else 422)  # type: ignore[return-value]
