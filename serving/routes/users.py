"""Users: erasure (the right to be forgotten)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response
from redis.exceptions import RedisError

from recsys.erasure import aerase_user, erase_control_record
from recsys.producer import ProducerError
from serving.deps import ServicesDep, UserIdPath, WriteAccess
from serving.schemas import ErrorOut

router = APIRouter(tags=["users"],
                   responses={422: {"model": ErrorOut, "description": "bad parameters"}})


@router.delete(
    "/v1/users/{user_id}", status_code=202, dependencies=[WriteAccess],
    responses={401: {"model": ErrorOut}, 503: {"model": ErrorOut}},
    summary="Erase a user everywhere",
    description="Deletes the user's vectors (every model version) and seen items at once, "
    "and sends an `erase` control record on the interactions topic (keyed by the user, "
    "after their earlier events): the stream worker tombstones their history-table entry and "
    "the trainer removes their rows from its history, so a retrain never brings them back "
    "(recsys.erasure). 202: done in Redis, the rest follows within seconds. Events of the "
    "user sent afterwards are new data.")
async def erase_user(services: ServicesDep, user_id: UserIdPath) -> Response:
    if services.producer is None:
        raise HTTPException(503, "erasure needs the Kafka producer (event ingest is off)")
    try:
        await aerase_user(services.redis, services.keys, user_id)
    except (RedisError, OSError) as exc:
        services.guard.failed("erase_user", exc)
        raise HTTPException(503, "Redis is unavailable; retry the erasure") from None
    key, value = erase_control_record(user_id)
    try:
        services.producer.send_raw(key, value)
    except ProducerError as exc:
        raise HTTPException(503, f"cannot hand the erasure to Kafka: {exc}; retry") from None
    services.metrics.erasures.inc()
    return Response(status_code=202)
