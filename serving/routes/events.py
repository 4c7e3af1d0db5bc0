"""HTTP ingest: one event or a batch, validated with recsys.events, produced to Kafka."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException
from pydantic import Field

from recsys.events import MAX_PAYLOAD_BYTES, Event, InvalidEvent, Reason, validate_event
from recsys.eventtime import EventClock, now_ms
from recsys.producer import ProducerBusy, ProducerError
from recsys.settings import MAX_BATCH_EVENTS_LIMIT
from serving.deps import ServicesDep, WriteAccess
from serving.responses import OrjsonResponse
from serving.schemas import ErrorOut, EventsAccepted
from serving.state import Services

router = APIRouter(tags=["events"])

EVENT_EXAMPLE = {"event_id": "e-1", "user_id": "u42", "item_id": "i7", "event_type": "view",
                 "timestamp": 1_700_000_000_000}


def unavailable(services: Services, reason: str, detail: str, n: int) -> HTTPException:
    """503 with Retry-After: the client keeps the events and sends them again."""
    services.metrics.produce_refused.labels(reason).inc(n)
    return HTTPException(503, detail,
                         headers={"Retry-After": str(services.settings.api_retry_after_s)})


def produce(services: Services, events: list[Event]) -> None:
    """Queue events on the producer without waiting (delivery is asynchronous); 503 with
    Retry-After when Kafka cannot take them now. Never blocks the event loop."""
    if not events:
        return
    if services.producer is None:
        raise unavailable(services, "no_producer",
                          "event ingest is unavailable (no Kafka producer)", len(events))
    try:
        services.producer.offer(events, services.settings.api_produce_stall_s)
    except ProducerBusy as exc:
        raise unavailable(services, exc.reason, f"Kafka cannot take events now: {exc}",
                          len(events)) from None
    except ProducerError as exc:
        raise unavailable(services, "producer_error", f"cannot hand events to Kafka: {exc}",
                          len(events)) from None


def at_arrival(services: Services, clock: EventClock, event: Event, arrival: int) -> Event:
    """The event, its time clamped to its arrival when the client's clock runs too far ahead
    (counted; recsys.eventtime)."""
    ts, why = clock.clamp(event.timestamp, arrival)
    if why is None:
        return event
    services.metrics.events_clamped.labels(why).inc()
    return event.model_copy(update={"timestamp": ts})


def check_event(data: Any, naive_utc: bool = False) -> Event:
    event = validate_event(data, naive_utc=naive_utc)
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
    "a machine-readable reason. 202 when at least one event was accepted (it is then "
    "queued for Kafka). 503 with Retry-After when Kafka cannot take the events now: send the "
    "same batch again later (event ids make a repeat harmless). A time "
    "more than event_time_future_tolerance_s ahead of the API's clock is set to the arrival "
    "time; ISO times need a zone.",
)
async def post_events(
    services: ServicesDep,
    body: Annotated[dict[str, Any] | Annotated[list[Any], Field(max_length=MAX_BATCH_EVENTS_LIMIT)],
                    Body(examples=[EVENT_EXAMPLE, [EVENT_EXAMPLE]])],
) -> EventsAccepted:
    batch = body if isinstance(body, list) else [body]
    limit = services.settings.api_max_batch_events
    if not batch:
        raise HTTPException(422, "the batch is empty")
    if len(batch) > limit:
        raise HTTPException(422, f"at most {limit} events per request; got {len(batch)}")
    settings = services.settings
    clock, arrival = EventClock.from_seconds(settings.event_time_future_tolerance_s), now_ms()
    accepted: list[Event] = []
    errors: list[dict[str, Any]] = []
    for index, data in enumerate(batch):
        try:
            event = check_event(data, settings.event_time_naive_utc)
            accepted.append(at_arrival(services, clock, event, arrival))
        except InvalidEvent as exc:
            errors.append({"index": index, **exc.as_dict()})
            services.metrics.events.labels("rejected", str(exc.reason)).inc()
    produce(services, accepted)
    if accepted:
        services.metrics.events.labels("accepted", "").inc(len(accepted))
    content = {"accepted": len(accepted), "rejected": len(errors),
               "event_ids": [e.event_id for e in accepted], "errors": errors}
    return OrjsonResponse(content, status_code=202 if accepted else 422)  # type: ignore[return-value]
