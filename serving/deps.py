"""FastAPI dependencies, as `Annotated` aliases the routes use in their signatures."""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request, Security, status
from fastapi.security import APIKeyHeader
from pydantic import ValidationError

from recsys.events import MAX_ID_LENGTH
from recsys.item_filter import (
    ALL_ATTRIBUTES,
    FILTER_PARAMS,
    InvalidFilter,
    ItemFilter,
    check_indexed,
    parse_filter,
)
from recsys.rules import FIELD_PATTERN, PLACEMENT_NAME_PATTERN, Rules, RulesError
from recsys.settings import Settings
from serving.merchandising import (
    PlacementsUnavailable,
    Reranker,
    RuleRequest,
    UnknownPlacement,
    resolve,
)
from serving.schemas import ID_PATTERN
from serving.state import Services


async def get_services(request: Request) -> Services:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:  # only when the app is used without its lifespan
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the API is starting")
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


DEFAULT_K = 10
# Built from the constants themselves, so the documentation cannot drift from them.
K_DESCRIPTION = (f"How many items: 1..api_max_k (setting, default "
                 f"{Settings.model_fields['api_max_k'].default}); default {DEFAULT_K}.")


async def get_k(
    services: ServicesDep,
    k: Annotated[int, Query(ge=1, description=K_DESCRIPTION)] = DEFAULT_K,
) -> int:
    limit = services.settings.api_max_k
    if k > limit:
        raise HTTPException(422,
                            f"k must be between 1 and {limit}; got {k}")
    return k


K = Annotated[int, Depends(get_k)]

UserIdPath = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN,
                                 description="User id (no control characters).")]
ItemIdPath = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN,
                                 description="Item id (no control characters).")]
CategoryQuery = Annotated[
    str | None,
    Query(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN,
          description="Only items of this catalog category."),
]


async def get_filters(
    request: Request,
    category: Annotated[list[str] | None, Query(
        description="Repeatable: only items in one of these categories (or below them: the "
        "category is on one of the item's category paths).")] = None,
    category_path: Annotated[list[str] | None, Query(
        description="Repeatable: only items with a category path starting with this prefix, "
        "levels separated by '/', root first (e.g. `home/kitchen`). Together with "
        "`category`, any one of the given categories suffices.")] = None,
    brand: Annotated[list[str] | None, Query(
        description="Repeatable: only items of one of these brands.")] = None,
    price_min: Annotated[str | None, Query(
        description="A number: only items with a price of at least this.")] = None,
    price_max: Annotated[str | None, Query(
        description="A number: only items with a price of at most this.")] = None,
    available: Annotated[str | None, Query(
        description="true (default): only available items; false: only items the "
        "catalogue marks unavailable.")] = None,
    tag: Annotated[list[str] | None, Query(
        description="Repeatable: only items carrying every tag given.")] = None,
    attr: Annotated[list[str] | None, Query(
        description="Repeatable, `name:value`: only items whose attribute `name` equals "
        "`value` (compared as text: true/false, 1995, red).")] = None,
) -> ItemFilter | None:
    """The request's filters (recsys.item_filter: every clause must hold); None when there
    are none. Parsed from the raw query by the core's parser, the same one the hot route's
    shortcut uses; the parameters above document them. 422 naming the parameter."""
    services: Services | None = getattr(request.app.state, "services", None)
    indexed = services.settings.api_filter_attributes if services else (ALL_ATTRIBUTES,)
    try:
        found = check_indexed(parse_filter(request.query_params.multi_items()), indexed)
    except InvalidFilter as exc:
        raise HTTPException(422, str(exc)) from None
    return found if found.restricts else None


Filters = Annotated[ItemFilter | None, Depends(get_filters)]
SessionQuery = Annotated[
    str | None,
    Query(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN,
          description="The visitor's user or session id (the user_id of their events): keys "
          "the impression and assigns the experiment variant."),
]

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                               description="Required on write endpoints when configured.")


async def require_api_key(services: ServicesDep,
                          key: Annotated[str | None, Security(_api_key_header)] = None
                          ) -> None:
    expected = services.settings.api_key
    if expected is None:
        return
    if key is None or not secrets.compare_digest(key.encode(),
                                                 expected.get_secret_value().encode()):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED,
                            "missing or wrong X-API-Key header",
                            headers={"WWW-Authenticate": "X-API-Key"})


WriteAccess = Depends(require_api_key)


async def require_admin_key(services: ServicesDep,
                            key: Annotated[str | None, Security(_api_key_header)] = None
                            ) -> None:
    """The admin API needs a configured key: without one it is off, never open."""
    if services.settings.api_key is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            "the admin API is off: set RECSYS_API_KEY to enable it")
    await require_api_key(services, key)


AdminAccess = Depends(require_admin_key)


# --- the hot route's shortcut -------------------------------------------------------------
# FastAPI's dependency solving and per-parameter pydantic validation cost more a request
# than Redis does (docs/benchmarks.md). `plain_user_params` accepts only requests whose
# parameters are plainly valid under exactly the rules declared above (UserIdPath, K,
# Filters, a bool), and says None for anything else, which then goes through FastAPI's
# own validation and its 422s. So it can only skip work, never accept what FastAPI would
# refuse or read a value differently.
_ID_RE = re.compile(ID_PATTERN)
_PLAIN_BOOLS = {"true": True, "false": False, "1": True, "0": False}
_MAX_K_DIGITS = 6


def plain_id(value: str) -> bool:
    """True when `value` passes UserIdPath / ItemIdPath / CategoryQuery."""
    # fullmatch, not match: Python's `$` also matches before a trailing newline.
    return len(value) <= MAX_ID_LENGTH and _ID_RE.fullmatch(value) is not None


def plain_user_params(user_id: str, query: Iterable[tuple[str, str]], max_k: int,
                      indexed: Iterable[str] = (ALL_ATTRIBUTES,)
                      ) -> tuple[str, int, bool, ItemFilter | None] | None:
    """(user_id, k, exclude_seen, filters) of a plainly well-formed personalised request,
    from its path parameter and its query pairs (Starlette's `query_params.multi_items()`);
    None when FastAPI should decide (anything unusual, invalid or unknown)."""
    if not plain_id(user_id):
        return None
    k, exclude_seen = DEFAULT_K, True
    names: set[str] = set()
    filter_pairs: list[tuple[str, str]] = []
    for name, value in query:
        if name in FILTER_PARAMS:
            filter_pairs.append((name, value))  # repeatable; parsed below as get_filters does
            continue
        if name in names:
            return None  # repeated: FastAPI's rule (the last wins) stays FastAPI's
        names.add(name)
        if name == "k":
            # ASCII digits without a leading zero; pydantic's laxer forms ("+5", " 5",
            # "5.0") take the long way.
            if not (0 < len(value) <= _MAX_K_DIGITS and value.isascii() and value.isdigit()
                    and value[0] != "0"):
                return None
            k = int(value)
            if k > max_k:
                return None
        elif name == "exclude_seen":
            flag = _PLAIN_BOOLS.get(value)
            if flag is None:
                return None
            exclude_seen = flag
        else:
            return None
    filters = None
    if filter_pairs:
        try:
            filters = check_indexed(parse_filter(filter_pairs), indexed)
        except InvalidFilter:
            return None  # FastAPI's path answers the 422
        if not filters.restricts:
            filters = None
    return user_id, k, exclude_seen, filters


# --- paging ---------------------------------------------------------------------------------
DEFAULT_LIMIT = 100
LIMIT_DESCRIPTION = (f"Page size: 1..api_max_page_size (setting); default {DEFAULT_LIMIT} "
                     "(or the bound, if lower).")


async def get_offset(
    services: ServicesDep,
    offset: Annotated[int, Query(ge=0, description="Skip this many items (paging); at most "
                                 "api_max_offset (setting).")] = 0,
) -> int:
    limit = services.settings.api_max_offset
    if offset > limit:
        raise HTTPException(422, f"offset must be between 0 and {limit}; got {offset}")
    return offset


async def get_limit(
    services: ServicesDep,
    limit: Annotated[int | None, Query(ge=1, description=LIMIT_DESCRIPTION)] = None,
) -> int:
    bound = services.settings.api_max_page_size
    if limit is None:
        return min(DEFAULT_LIMIT, bound)
    if limit > bound:
        raise HTTPException(422, f"limit must be between 1 and {bound}; got {limit}")
    return limit


Offset = Annotated[int, Depends(get_offset)]
Limit = Annotated[int, Depends(get_limit)]


# --- business rules (recsys.rules, serving.merchandising) ------------------------------------
@dataclass(frozen=True)
class RuleQuery:
    """The rule parameters of a list request's query string."""

    placement: str | None
    rules: Rules | None


async def get_rule_query(
    placement: Annotated[str | None, Query(
        pattern=PLACEMENT_NAME_PATTERN,
        description="Apply the rules stored as this placement (PUT /v1/placements/{name}); "
        "422 when there is none; 503 when this process has not cached it and Redis "
        "cannot be asked.")] = None,
    diversity: Annotated[float | None, Query(
        ge=0.0, le=1.0, allow_inf_nan=False,
        description="MMR re-rank: 0 keeps the model's order, 1 picks the least similar "
        "item next (cosine of the item factors).")] = None,
    max_per: Annotated[int | None, Query(
        ge=1, le=10_000,
        description="At most this many items per value of `max_per_field`.")] = None,
    max_per_field: Annotated[str | None, Query(
        pattern=FIELD_PATTERN,
        description="What `max_per` groups by: category (the default), brand, tag or "
        "attributes.<name>.")] = None,
) -> RuleQuery:
    rules = None
    if diversity is not None or max_per is not None or max_per_field is not None:
        given = {"diversity": diversity, "max_per": max_per, "max_per_field": max_per_field}
        try:
            rules = Rules(**{name: value for name, value in given.items()
                             if value is not None})
        except ValidationError as exc:
            raise HTTPException(422, "; ".join(
                f"max_per_field: {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors())) from None
    return RuleQuery(placement, rules)


RuleQueryDep = Annotated[RuleQuery, Depends(get_rule_query)]
NO_RULES = RuleQuery(None, None)  # the signature default (FastAPI always solves it)


async def rule_request(services: Services, query: RuleQuery, k: int, offset: int = 0,
                       body_rules: Rules | None = None) -> RuleRequest | None:
    """The merged rules of one request (placement, then the query's, then the body's
    `rules`); None when there are none. 422 naming the parameter when they cannot apply;
    503 when a placement this process has not cached cannot be looked up (Redis down: the
    name may well exist, so it is not called unknown)."""
    own = query.rules
    param = ""
    if body_rules is not None:
        own = body_rules.over(own)
        param = "rules"
    try:
        return await resolve(services.placements, services.catalog, query.placement, own, k,
                             offset, services.settings.api_rules_max_weight, param)
    except UnknownPlacement as exc:
        raise HTTPException(422, f"placement: {exc}") from None
    except PlacementsUnavailable as exc:
        services.guard.failed("placements", exc.__cause__ or exc)
        raise HTTPException(503, f"placement: {exc}") from None
    except RulesError as exc:
        raise HTTPException(422, str(exc)) from None


def reranker(services: Services, request: RuleRequest | None, filters: ItemFilter | None,
             hidden: Callable[[], Awaitable[list[str]]] | None = None) -> Reranker | None:
    if request is None:
        return None
    return Reranker(request, services.catalog, services.holder,
                    services.settings.api_rules_pool_factor, hidden, filters)
