"""Placements: named business-rule sets (a home-page carousel, a basket page...) stored in
Redis and applied to a list with `placement=NAME` (recsys.rules, serving.merchandising)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Response
from redis.exceptions import RedisError

from recsys.rules import PLACEMENT_NAME_PATTERN, Rules, RulesError, check_rules
from serving.deps import ServicesDep, WriteAccess
from serving.merchandising import PlacementsUnavailable, UnknownPlacement
from serving.responses import OrjsonResponse
from serving.schemas import ErrorOut
from serving.state import Services

router = APIRouter(prefix="/v1/placements", tags=["placements"],
                   responses={422: {"model": ErrorOut, "description": "bad rules"},
                              503: {"model": ErrorOut, "description": "Redis unavailable"}})

NamePath = Annotated[str, Path(pattern=PLACEMENT_NAME_PATTERN,
                               description="Placement name (letters, digits, _ . -).")]
EXAMPLE = {"boosts": [{"field": "brand", "value": "acme", "weight": 2.0},
                      {"field": "attributes.margin", "min": 0.3, "weight": 1.5},
                      {"field": "new", "days": 14, "weight": 1.3}],
           "pins": [{"item_id": "sku-42", "position": 1}],
           "max_per": 2, "max_per_field": "category", "diversity": 0.3}


def _unavailable(services: Services, exc: Exception) -> HTTPException:
    services.guard.failed("placements", exc)
    return HTTPException(503, "Redis is unavailable; retry")


@router.get("", summary="Every placement and its rules")
async def list_placements(services: ServicesDep) -> dict[str, Rules]:
    try:
        stored = await services.placements.all()
    except (RedisError, OSError) as exc:
        raise _unavailable(services, exc) from None
    return OrjsonResponse({name: rules.model_dump() for name, rules in  # type: ignore[return-value]
                           stored.items()})


@router.get("/{name}", summary="One placement's rules",
            responses={404: {"model": ErrorOut}})
async def get_placement(services: ServicesDep, name: NamePath) -> Rules:
    try:
        stored = await services.placements.all()
    except (RedisError, OSError) as exc:
        raise _unavailable(services, exc) from None
    if name not in stored:
        raise HTTPException(404, f"no placement named {name!r}")
    return stored[name]


@router.put(
    "/{name}", summary="Create or replace a placement", dependencies=[WriteAccess],
    responses={401: {"model": ErrorOut}},
    description="Body: the rules (boosts, pins, max_per, max_per_field, diversity; see "
    "docs/serving.md). Checked as a request's rules are, with pins allowed up to api_max_k "
    "(a request with a smaller k shows the pins within its page). Every API process applies "
    "it within seconds; this one at once.")
async def put_placement(services: ServicesDep, name: NamePath, body: Rules) -> Rules:
    settings = services.settings
    try:
        check_rules(body, max_weight=settings.api_rules_max_weight,
                    max_position=settings.api_max_k,
                    known_attributes=services.catalog.attribute_names, param="")
    except RulesError as exc:
        raise HTTPException(422, str(exc)) from None
    placements = services.placements
    try:
        if (name not in placements.rules
                and await placements.count() >= settings.api_max_placements):
            try:
                await placements.get(name)
            except UnknownPlacement:
                raise HTTPException(422, f"at most {settings.api_max_placements} placements "
                                    "(setting api_max_placements); delete one first") from None
        await placements.put(name, body)
    except (RedisError, OSError, PlacementsUnavailable) as exc:
        raise _unavailable(services, exc) from None
    return body


@router.delete("/{name}", status_code=204, summary="Delete a placement",
               dependencies=[WriteAccess],
               responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}})
async def delete_placement(services: ServicesDep, name: NamePath) -> Response:
    try:
        removed = await services.placements.delete(name)
    except (RedisError, OSError) as exc:
        raise _unavailable(services, exc) from None
    if not removed:
        raise HTTPException(404, f"no placement named {name!r}")
    return Response(status_code=204)
