"""Admin API for A/B experiments: create, list with results, report, stop, delete.

Every route needs the API key (like the rest of /v1/admin). Counts come from the stream
worker's attribution (recsys.keys `experiment:{name}:counts`)."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, HTTPException, Path
from pydantic import ValidationError
from redis.exceptions import RedisError

from recsys.eventtime import now_ms
from recsys.experiments import (
    NAME_PATTERN,
    Experiment,
    ExperimentError,
    counts_from_hash,
    manifests_needed,
    ordered_counts,
    report,
    resolve_versions,
)
from serving.deps import AdminAccess, ServicesDep
from serving.responses import OrjsonResponse
from serving.schemas import ErrorOut
from serving.state import Services

router = APIRouter(prefix="/v1/admin/experiments", tags=["admin"], dependencies=[AdminAccess],
                   responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut},
                              503: {"model": ErrorOut}})

NamePath = Annotated[str, Path(pattern=NAME_PATTERN, description="Experiment name.")]
EXAMPLE = {"variants": [{"name": "model", "kind": "model", "share": 0.5},
                        {"name": "popularity", "kind": "popularity", "share": 0.5}]}


def _unavailable(services: Services, exc: Exception) -> HTTPException:
    services.guard.failed("admin_experiments", exc)
    return HTTPException(503, "Redis is unavailable; retry")


async def _resolved(services: Services, experiment: Experiment) -> Experiment:
    """The experiment with its variants' model versions resolved (recsys.experiments)."""
    control, keys = services.control, services.keys
    raw_current = await control.get(keys.current_model)
    current = raw_current.decode() if raw_current else None
    previous = [v.decode() for v in await control.lrange(keys.previous_models, 0, -1)]
    manifests = {}
    for version in manifests_needed(experiment, current, previous):
        raw = await control.get(keys.model_manifest(version))
        if raw is not None:
            manifests[version] = orjson.loads(raw)
    return resolve_versions(experiment, manifests, current, previous)


async def _report(services: Services, experiment: Experiment) -> dict[str, Any]:
    raw = await services.control.hgetall(services.keys.experiment_counts(experiment.name))
    out = report(experiment.name, ordered_counts(experiment, counts_from_hash(raw)))
    out["active"] = experiment.active
    out["config"] = experiment.model_dump()
    return out


@router.get("", summary="Experiments with per-variant impressions, clicks and CTR",
            description="`experiments`: each experiment's report (the same as "
            "`/v1/admin/experiments/{name}`); `variants`: one flat row per variant of every "
            "experiment (the admin console's table).")
async def list_experiments(services: ServicesDep) -> Any:
    try:
        reports = [await _report(services, e) for e in await services.experiments.all()]
    except (RedisError, OSError) as exc:
        raise _unavailable(services, exc) from None
    rows = []
    for rep in reports:
        shares = {v["name"]: v["share"] for v in rep["config"]["variants"]}
        for v in rep["variants"]:
            rows.append({"experiment": rep["name"], "active": rep["active"],
                         "variant": v["name"], "share": shares.get(v["name"]),
                         "impressions": v["impressions"], "clicks": v["clicks"],
                         "ctr": round(v["ctr"], 4), "purchases": v["purchases"],
                         "p_value": None if rep["p_value"] is None
                         else round(float(rep["p_value"]), 4)})
    return OrjsonResponse({"experiments": reports, "variants": rows})


@router.get("/{name}", summary="One experiment's report",
            responses={404: {"model": ErrorOut}},
            description="Per variant: impressions, clicks, add-to-carts, purchases, CTR and "
            "conversion with 95 % Wilson intervals; each variant z-tested against the first "
            "(the control); `enough_data` false until every variant has min_impressions.")
async def get_experiment(services: ServicesDep, name: NamePath) -> Any:
    try:
        for experiment in await services.experiments.all():
            if experiment.name == name:
                return OrjsonResponse(await _report(services, experiment))
    except (RedisError, OSError) as exc:
        raise _unavailable(services, exc) from None
    raise HTTPException(404, f"no experiment named {name!r}")


@router.put("/{name}", summary="Create or replace an experiment",
            responses={409: {"model": ErrorOut, "description": "another one is active"},
                       422: {"model": ErrorOut, "description": "bad configuration"}},
            description="Body: `variants` (name, kind: model | popularity | model_version | "
            "model_kind | hybrid_weight, value: the version, kind or weight, share; shares sum "
            "to 1) and `active` (default true). The answer carries each variant's resolved "
            "`version`. At most one experiment is active. Replacing an experiment keeps its "
            "counts; delete it to start afresh.")
async def put_experiment(services: ServicesDep, name: NamePath,
                         body: Annotated[dict[str, Any], Body(examples=[EXAMPLE])]) -> Any:
    try:
        experiment = Experiment.model_validate({**body, "name": name, "created_at": now_ms()})
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                           for e in exc.errors())
        raise HTTPException(422, f"invalid experiment: {detail}") from None
    try:
        experiment = await _resolved(services, experiment)
        if experiment.active:
            others = [e.name for e in await services.experiments.all()
                      if e.active and e.name != name]
            if others:
                raise HTTPException(409, f"experiment {others[0]!r} is active; stop it first "
                                    "(PUT it with active false, or DELETE it)")
        await services.experiments.put(experiment)
    except ExperimentError as exc:
        raise HTTPException(422, f"invalid experiment: {exc}") from None
    except (RedisError, OSError) as exc:
        raise _unavailable(services, exc) from None
    return OrjsonResponse(experiment.model_dump())


@router.delete("/{name}", summary="Delete an experiment and its counts",
               responses={404: {"model": ErrorOut}})
async def delete_experiment(services: ServicesDep, name: NamePath) -> Any:
    try:
        removed = await services.experiments.delete(name)
    except (RedisError, OSError) as exc:
        raise _unavailable(services, exc) from None
    if not removed:
        raise HTTPException(404, f"no experiment named {name!r}")
    return OrjsonResponse({"deleted": name})
