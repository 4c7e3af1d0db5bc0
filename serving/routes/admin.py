"""Admin API for the console: model versions and rollback, stream progress.

Every route needs the API key, and the admin API is off when none is configured."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException
from redis.exceptions import RedisError

from recsys.errors import ModelIntegrityError, ModelNotFound
from recsys.kafka import group_progress
from recsys.modelstore import rollback_version
from recsys.redis_client import amget, redis_client
from serving.deps import AdminAccess, ServicesDep
from serving.responses import OrjsonResponse
from serving.schemas import ErrorOut

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[AdminAccess],
                   responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut},
                              503: {"model": ErrorOut}})

# Manifest fields the console shows; the big ones (snapshot offsets) stay out.
MANIFEST_FIELDS = ("created_at", "factors", "regularization", "alpha", "iterations", "n_users",
                   "n_items", "metrics", "baseline_metrics", "beats_popularity", "source",
                   "kind", "leaderboard", "status")


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


@router.get("/models", summary="Model versions in Redis (current and rollback list)",
            description="The version in service and the versions a rollback can return to, "
            "newest first, each with the metrics (and candidates' leaderboard, when the "
            "trainer wrote one) of its manifest.")
async def models(services: ServicesDep) -> Any:
    keys, control = services.keys, services.control
    try:
        current = _text(await control.get(keys.current_model))
        previous = [_text(v) for v in await control.lrange(keys.previous_models, 0, -1)]
        versions = [v for v in [current, *previous] if v]
        # Several versions' manifests: several slots in a cluster, hence not one MGET there.
        manifests = await amget(control, [keys.model_manifest(v) for v in versions]) \
            if versions else []
    except (RedisError, OSError) as exc:
        services.guard.failed("admin_models", exc)
        raise HTTPException(503, "Redis is unavailable; retry") from None
    rows = []
    for version, raw in zip(versions, manifests, strict=True):
        manifest = orjson.loads(raw) if raw else {}
        rows.append({"version": version,
                     "role": "current" if version == current else "previous",
                     **{name: manifest.get(name) for name in MANIFEST_FIELDS
                        if name in manifest}})
    loaded = services.holder.current
    return OrjsonResponse({"current": current,
                           "served": loaded.version if loaded else None,
                           "gate_metric": services.settings.trainer_gate_metric,
                           "versions": rows})


@router.post("/models/rollback", summary="Make the previous model version current again",
             responses={409: {"model": ErrorOut, "description": "nothing to roll back to"}},
             description="The same atomic rollback as `recsys model rollback`; every API "
             "replica and stream worker switches on the announcement.")
async def rollback(services: ServicesDep) -> Any:
    def run() -> tuple[str, str | None]:
        client = redis_client(services.settings, socket_timeout=5.0)
        try:
            return rollback_version(client, services.keys)
        finally:
            client.close()

    try:
        restored, replaced = await asyncio.to_thread(run)
    except (ModelNotFound, ModelIntegrityError) as exc:
        raise HTTPException(409, str(exc)) from None
    except (RedisError, OSError) as exc:
        services.guard.failed("admin_rollback", exc)
        raise HTTPException(503, "Redis is unavailable; retry") from None
    return OrjsonResponse({"restored": restored, "replaced": replaced})


@router.get("/stream", summary="The stream worker's progress through the interactions topic",
            description="Per partition: the stream consumer group's committed offset, the "
            "end of the partition, the lag in records, and how far behind in time the last "
            "committed record is (`behind_ms`, 0 when caught up). Read from Kafka.")
async def stream_status(services: ServicesDep) -> Any:
    settings = services.settings
    started = time.time()
    try:
        rows = await asyncio.to_thread(group_progress, settings, settings.stream_app_id,
                                       settings.interactions_topic)
    except Exception as exc:  # noqa: BLE001 - any client error: the broker is unreachable
        raise HTTPException(503, f"cannot read the stream's progress from Kafka: {exc}"
                            ) from None
    now_ms = int(started * 1000)
    partitions = []
    for row in rows:
        behind = (max(0, row.end_ms - row.committed_ms)
                  if row.end_ms is not None and row.committed_ms is not None else None)
        partitions.append({"partition": row.partition, "committed": row.committed,
                           "end": row.end, "lag": row.lag, "behind_ms": behind,
                           "last_committed_age_ms": None if row.committed_ms is None
                           else max(0, now_ms - row.committed_ms)})
    known = [p["behind_ms"] for p in partitions if p["behind_ms"] is not None]
    return OrjsonResponse({"group": settings.stream_app_id,
                           "topic": settings.interactions_topic,
                           "lag": sum(p["lag"] for p in partitions),
                           "behind_ms": max(known) if known else None,
                           "partitions": partitions})
