"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from serving.deps import ServicesDep
from serving.responses import OrjsonResponse
from serving.schemas import Health, Readiness

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, summary="The process is alive")
async def healthz() -> Health:
    return OrjsonResponse({"status": "ok"})  # type: ignore[return-value]


@router.get("/readyz", response_model=Readiness,
            responses={503: {"description": "the API is still starting"}},
            summary="The API answers requests (status ready, or degraded with reasons)",
            description="200 as soon as the API can answer: with a Redis outage or no model "
            "it still answers from its fallbacks, so it stays in rotation and says "
            "`degraded` with the reasons (redis_unavailable, no_model, "
            "event_ingest_unavailable, kafka_stalled). Taking every replica out of a load "
            "balancer because the shared Redis blinked would turn a degraded answer into "
            "none. 503 only while starting. Liveness is /healthz.")
async def readyz(services: ServicesDep) -> Readiness:
    try:
        redis_ok = bool(await services.redis.ping())
    except (RedisError, OSError):
        redis_ok = False
    model = services.holder.current
    degraded = []
    if not redis_ok:
        degraded.append("redis_unavailable")
    if model is None:
        degraded.append("no_model")
    producer = services.producer
    if producer is None:
        degraded.append("event_ingest_unavailable")
    elif producer.stalled_for() > services.settings.api_produce_stall_s:
        degraded.append("kafka_stalled")
    return OrjsonResponse(  # type: ignore[return-value]
        {"status": "degraded" if degraded else "ready", "degraded": degraded,
         "redis": redis_ok, "model_version": model.version if model else None,
         "items": len(model.item_ids) if model else 0})


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    # `exposed`: all worker processes' values in multiprocess mode, else the app's registry.
    return Response(generate_latest(request.app.state.metrics.exposed),
                    media_type=CONTENT_TYPE_LATEST)
