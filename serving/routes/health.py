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
            responses={503: {"model": Readiness, "description": "not ready"}},
            summary="Redis answers and a model version is loaded")
async def readyz(services: ServicesDep) -> Readiness:
    try:
        redis_ok = bool(await services.redis.ping())
    except (RedisError, OSError):
        redis_ok = False
    model = services.holder.current
    ready = redis_ok and model is not None
    return OrjsonResponse(  # type: ignore[return-value]
        {"status": "ready" if ready else "not ready", "redis": redis_ok,
         "model_version": model.version if model else None,
         "items": len(model.item_ids) if model else 0},
        status_code=200 if ready else 503)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    # `exposed`: all worker processes' values in multiprocess mode, else the app's registry.
    return Response(generate_latest(request.app.state.metrics.exposed),
                    media_type=CONTENT_TYPE_LATEST)
