"""Recommendations for many users in one request (e-mail campaigns, precomputed lists)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from fastapi import APIRouter, HTTPException, Response
from pydantic import BaseModel, ConfigDict, Field

from recsys.item_attributes import attribute_text
from recsys.item_filter import (
    InvalidFilter,
    ItemFilter,
    category_filter,
    check_indexed,
    parse_filter,
)
from recsys.rules import PLACEMENT_NAME_PATTERN, Rules
from serving.business import UserList, for_users
from serving.deps import DEFAULT_K, Filters, RuleQuery, ServicesDep, rule_request
from serving.merchandising import Reranker, pool_size
from serving.responses import render
from serving.schemas import (
    PLACEMENT_UNAVAILABLE,
    AttributeValue,
    ErrorOut,
    Id,
    UserRecommendations,
)
from serving.state import Services

router = APIRouter(tags=["recommendations"],
                   responses={422: {"model": ErrorOut, "description": "bad parameters"}})

# The schema's own bound; the route applies the setting api_max_batch_users.
MAX_BATCH_USERS_LIMIT = 10_000

OneOrMore = str | list[str]


class FilterIn(BaseModel):
    """The list filters (recsys.item_filter, the query parameters of the single-user route)
    as a JSON object: every clause given must hold. Values are checked by the same parser
    as the query string's (`parse_filter`); a bad one is a 422 naming `filter.<name>`."""

    model_config = ConfigDict(extra="forbid")

    category: OneOrMore | None = Field(
        default=None, description="One or more categories: the item is in one of them or "
        "below it.")
    category_path: OneOrMore | None = Field(
        default=None, description="One or more path prefixes, levels separated by '/', root "
        "first (`home/kitchen`). With `category`, any one of them suffices.")
    brand: OneOrMore | None = Field(default=None, description="One or more brands.")
    price_min: float | None = Field(default=None, description="Price at least this.")
    price_max: float | None = Field(default=None, description="Price at most this.")
    available: bool | None = Field(
        default=None, description="true (default): available items only; false: only items "
        "the catalogue marks unavailable.")
    tag: OneOrMore | None = Field(default=None, description="The item has every tag given.")
    attr: dict[str, AttributeValue] | None = Field(
        default=None, description="Attribute equality, `{\"colour\": \"black\", \"year\": "
        "1995}` (compared as text, like `attr=colour:black` in a query string).")

    def item_filter(self, indexed: tuple[str, ...]) -> ItemFilter:
        """The core's ItemFilter; HTTPException 422 naming `filter.<parameter>`."""
        pairs: list[tuple[str, str]] = []
        for name in ("category", "category_path", "brand", "tag"):
            value = getattr(self, name)
            if value is not None:
                pairs += [(name, v) for v in ([value] if isinstance(value, str) else value)]
        for name in ("price_min", "price_max"):
            value = getattr(self, name)
            if value is not None:
                pairs.append((name, repr(value)))  # repr round-trips a float exactly
        if self.available is not None:
            pairs.append(("available", "true" if self.available else "false"))
        for name, value in (self.attr or {}).items():
            if ":" in name:  # the query form's NAME:VALUE cannot say it either
                raise HTTPException(422, f"filter.attr: attribute name {name[:80]!r} contains "
                                    "':', which filters cannot name")
            pairs.append(("attr", f"{name}:{attribute_text(value)}"))
        try:
            return check_indexed(parse_filter(pairs), indexed)
        except InvalidFilter as exc:
            raise HTTPException(422, f"filter.{exc}") from None


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_ids: list[Id] = Field(min_length=1, max_length=MAX_BATCH_USERS_LIMIT,
                               description="Users (at most api_max_batch_users).")
    k: int = Field(default=DEFAULT_K, ge=1, description="Items per user: 1..api_max_k.")
    exclude_seen: bool = Field(default=True, description="Leave out items each user has seen.")
    filter: FilterIn | None = Field(
        default=None, description="Which items the lists may hold, as on the single-user "
        "route (or give them in the query string, not both).")
    category: Id | None = Field(
        default=None, description="Only items of this category: the older spelling of "
        "`filter.category` (not together with other filters).")
    placement: str | None = Field(default=None, pattern=PLACEMENT_NAME_PATTERN,
                                  description="Apply this stored placement's rules first.")
    rules: Rules | None = Field(default=None, description="Boosts, pins, max_per and "
                                "diversity of this request, on top of the placement's.")


class BatchOut(BaseModel):
    results: list[UserRecommendations] = Field(
        description="One list per requested user, in request order; each is what "
        "GET /v1/users/{user_id}/recommendations answers (fallbacks included).")


def batch_filter(services: Services, body: BatchIn, query: ItemFilter | None
                 ) -> ItemFilter | None:
    """The batch's one filter: from the body's `filter`, its `category`, or the query string
    (one of them; 422 naming the parameter when they are mixed or bad)."""
    given = [name for name, present in (("filter", body.filter is not None),
                                        ("category", body.category is not None),
                                        ("query string", query is not None)) if present]
    if len(given) > 1:
        raise HTTPException(422, f"{given[0]}: give the filters in one place (got "
                            f"{' and '.join(given)})")
    if body.filter is not None:
        found = body.filter.item_filter(services.settings.api_filter_attributes)
    elif body.category is not None:
        found = category_filter(body.category)
    else:
        return query
    return found if found.restricts else None


@router.post(
    "/v1/recommendations/batch", response_model=BatchOut,
    summary="Personalised top-k for many users",
    responses={503: PLACEMENT_UNAVAILABLE},
    description="The personalised lists of many users at once. The users' vectors are read "
    "in one Redis round trip and scored in one matrix product (Y [x_1 .. x_B]), which costs "
    "far less than B single requests; users the model cannot answer get the usual fallbacks "
    "(`source` says which). Filters as on the single-user route: the body's `filter` object "
    "(`{\"category\": [...], \"price_max\": 50, \"attr\": {\"colour\": \"black\"}}`) or the "
    "same query parameters. Business rules as on its POST variant: `placement` and `rules` "
    "re-rank each user's top api_rules_pool_factor x k (still one scoring pass). Each list "
    "has its own `recommendation_id` and is recorded as an impression (endpoint `batch`); "
    "batch lists are never part of an experiment. Bad input: 422 naming the parameter "
    "(`filter.price_min`, `rules.pins[0].position`, `placement`).")
async def batch_recommendations(services: ServicesDep, body: BatchIn,
                                filters: Filters) -> BatchOut:
    settings = services.settings
    if len(body.user_ids) > settings.api_max_batch_users:
        raise HTTPException(422, f"user_ids: at most {settings.api_max_batch_users} users; "
                            f"got {len(body.user_ids)}")
    if body.k > settings.api_max_k:
        raise HTTPException(422, f"k must be between 1 and {settings.api_max_k}; got {body.k}")
    filters = batch_filter(services, body, filters)
    request = await rule_request(services, RuleQuery(body.placement, None), body.k, 0,
                                 body.rules)
    factor = settings.api_rules_pool_factor
    # With rules, each user's list is asked pool-deep in the one scoring pass, then re-ranked.
    depth = body.k if request is None else pool_size(request, factor)
    lists = await for_users(services.recommender, body.user_ids, depth,
                            exclude_seen=body.exclude_seen, filters=filters)
    members: list[list[bytes] | None] = [None] * len(lists)
    if request is not None:
        rules = request.rules
        if rules.boosts or rules.max_per is not None:
            # One catalogue read for every user's pool: each re-rank then hits the cache.
            await services.catalog.rule_items(list(dict.fromkeys(
                item for entry in lists for item, _ in entry.result.items)))
        for n, (user, entry) in enumerate(zip(body.user_ids, lists, strict=True)):
            ruled = Reranker(request, services.catalog, services.holder, factor,
                             _hidden_of(services, user, entry), filters)
            entry.result = await ruled(entry.result)
            members[n] = ruled.members()
    extra = {"placement": request.placement} if request is not None and request.placement \
        else {}
    # Each user's list is an impression of its own, outside experiments: a campaign sends
    # the model's lists, and a click on one is attributed to it like any other.
    parts = [orjson.Fragment(bytes((await render(
        entry.result, services.catalog, services.metrics, "batch", own, user_id=user, **extra,
        recommendation_id=services.impressions.record(services.producer, "batch",
                                                      entry.result, user),
        variant=None)).body))
             for user, entry, own in zip(body.user_ids, lists, members, strict=True)]
    return Response(orjson.dumps({"results": parts}),  # type: ignore[return-value]
                    media_type="application/json")


def _hidden_of(services: Services, user: str, entry: UserList
               ) -> Callable[[], Awaitable[list[str]]]:
    """The user's hidden items for their pins: the batch's read, or one of their own when
    the batch took a fallback path without reading them."""
    async def hidden() -> list[str]:
        if entry.hidden is not None:
            return entry.hidden
        return await services.recommender.hidden(user)
    return hidden
