"""Personalised recommendations for a user, and for an anonymous session."""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.routing import APIRoute

from recsys.item_filter import ItemFilter
from recsys.rules import PLACEMENT_NAME_PATTERN
from serving.business import Unavailable, because_lists, read_users
from serving.deps import (
    NO_RULES,
    Filters,
    K,
    Offset,
    RuleQuery,
    RuleQueryDep,
    ServicesDep,
    SessionQuery,
    UserIdPath,
    plain_user_params,
    reranker,
    rule_request,
)
from serving.experiments import recommend
from serving.fallback import Result
from serving.merchandising import RuleRequest
from serving.responses import render
from serving.schemas import (
    PLACEMENT_UNAVAILABLE,
    AnonymousRequest,
    ErrorOut,
    RecommendationList,
    RecommendRequest,
    UserRecommendations,
)
from serving.state import Services

router = APIRouter(tags=["recommendations"],
                   responses={422: {"model": ErrorOut, "description": "bad parameters"},
                              503: PLACEMENT_UNAVAILABLE})


async def _for_user(services: Services, user_id: str, k: int, exclude_seen: bool,
                    filters: ItemFilter | None, offset: int = 0,
                    rules: RuleRequest | None = None,
                    explain: bool = False) -> Response:
    # A popularity variant serves the trending list (not paged: `offset` is the model's).
    rec = services.recommender
    ruled = reranker(services, rules, filters, lambda: rec.hidden(user_id))
    if ruled is None:
        result, served = await recommend(
            services, "user", user_id, k, filters,
            lambda how: rec.for_user(user_id, k, exclude_seen, filters, offset, how))
        members = None
    else:
        # The rules re-rank a deeper list from the top, then cut the page.
        pool = ruled.pool
        result, served = await recommend(
            services, "user", user_id, pool, filters,
            lambda how: rec.for_user(user_id, pool, exclude_seen, filters, 0, how),
            finish=ruled)
        members = ruled.members()
    if explain:
        because = [b',"because":' + orjson.dumps(entry)
                   for entry in await _because(services, user_id, result)]
        members = because if members is None else [
            own + more for own, more in zip(members, because, strict=True)]
    extra = {"placement": rules.placement} if rules is not None and rules.placement else {}
    return await render(result, services.catalog, services.metrics, "user", members,
                        user_id=user_id, **extra, **served)


async def _because(services: Services, user_id: str, result: Result) -> list[list[dict]]:
    """explain=true: each item's top contributing history items; [] for every item when the
    list is not the ALS model's (a fallback, another version) or Redis cannot say."""
    model = services.holder.current
    empty: list[list[dict]] = [[] for _ in result.items]
    if (model is None or result.source != "personalized"
            or result.model_version != model.version):
        return empty
    try:
        (user,) = await read_users(services.recommender, model, [user_id])
    except Unavailable:
        return empty
    return because_lists(model, user, [item for item, _ in result.items],
                         services.settings.api_explain_items)


class PersonalisedRoute(APIRoute):
    """The hot route: plainly well-formed requests (`plain_user_params`) skip FastAPI's
    dependency solving and parameter validation; anything else, and the
    OpenAPI schema, come from the declared signature below as usual.

    Those requests take the services from `app.state` directly, so a
    `dependency_overrides[get_services]` would not reach them: override `app.state.services`
    instead."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        standard = super().get_route_handler()

        async def handler(request: Request) -> Response:
            services: Services | None = request.app.state.services
            if services is not None:
                query = request.query_params.multi_items()
                # A placement (the common way to apply rules) keeps the shortcut too.
                rest = [(name, value) for name, value in query if name != "placement"]
                placement = plain_placement(query) if len(rest) < len(query) else None
                params = plain_user_params(request.path_params.get("user_id", ""), rest,
                                           services.settings.api_max_k,
                                           services.settings.api_filter_attributes)
                if params is not None and len(rest) == len(query):
                    return await _for_user(services, *params)
                if params is not None and placement is not None:
                    rules = await rule_request(services, RuleQuery(placement, None),
                                               params[1])
                    return await _for_user(services, *params, 0, rules)
            return await standard(request)

        return handler


_PLACEMENT_RE = re.compile(PLACEMENT_NAME_PATTERN)


def plain_placement(query: list[tuple[str, str]]) -> str | None:
    """The one `placement` of a query when it passes its declared pattern (None: FastAPI
    decides, repeated or invalid)."""
    values = [value for name, value in query if name == "placement"]
    if len(values) == 1 and _PLACEMENT_RE.fullmatch(values[0]):
        return values[0]
    return None


async def user_recommendations(
    services: ServicesDep,
    user_id: UserIdPath,
    k: K,
    filters: Filters,
    exclude_seen: Annotated[bool, Query(description="Leave out items the user has seen.")]
    = True,
    offset: Offset = 0,
    rules: RuleQueryDep = NO_RULES,
    explain: Annotated[bool, Query(
        description="Add to each item `because`: the user's history items that contributed "
        "most to its score (api_explain_items of them; the /because maths).")] = False,
) -> UserRecommendations:
    merged = await rule_request(services, rules, k, offset)
    if merged is None and not explain:  # the shortcut's call, exactly
        return await _for_user(services, user_id, k, exclude_seen, filters,
                               offset)  # type: ignore[return-value]
    return await _for_user(services, user_id, k, exclude_seen, filters,
                           offset, merged, explain)  # type: ignore[return-value]


router.add_api_route("/v1/users/{user_id}/recommendations", user_recommendations,
                     methods=["GET"], response_model=UserRecommendations,
                     summary="Personalised top-k for a user",
                     description="Items `offset` .. `offset + k - 1` of the user's ranking. "
                     "The model's ranking is ordered by score, then by the item's row, so "
                     "the pages of one model version and user state neither overlap nor "
                     "skip an item (a new event of the user, or a model switch, re-ranks). "
                     "Business rules: `placement` applies a stored rule set; `diversity`, "
                     "`max_per` and `max_per_field` add to it (boosts and pins need the POST "
                     "variant's body). Rules re-rank the model's top api_rules_pool_factor x "
                     "(offset + k).",
                     route_class_override=PersonalisedRoute)


@router.post(
    "/v1/users/{user_id}/recommendations", response_model=UserRecommendations,
    summary="Personalised top-k for a user, with per-request business rules",
    description="The GET route's list: its filters in the query string as there, the other "
    "parameters in a JSON body, with `rules`: boosts "
    "(field, value or min/max or days, weight), pins (item_id, position 1..k), max_per, "
    "max_per_field and diversity. They apply on top of the `placement`'s rules (a boost "
    "replaces the placement's boost of the same condition, a pin the placement's pin of "
    "the same item or position). Bad rules: 422 naming the parameter (`rules.boosts[0]."
    "weight`...). A read: no API key needed.")
async def user_recommendations_with_rules(services: ServicesDep, user_id: UserIdPath,
                                          body: RecommendRequest,
                                          filters: Filters) -> UserRecommendations:
    settings = services.settings
    if body.k > settings.api_max_k:
        raise HTTPException(422, f"k must be between 1 and {settings.api_max_k}; got {body.k}")
    if body.offset > settings.api_max_offset:
        raise HTTPException(422, f"offset must be between 0 and {settings.api_max_offset}; "
                            f"got {body.offset}")
    merged = await rule_request(services, RuleQuery(body.placement, None), body.k,
                                body.offset, body.rules)
    return await _for_user(services, user_id, body.k, body.exclude_seen, filters,
                           body.offset, merged, body.explain)  # type: ignore[return-value]


@router.post("/v1/recommendations/anonymous", response_model=RecommendationList,
             summary="Recommendations for a visitor without id, from their session")
async def anonymous_recommendations(
    services: ServicesDep, body: AnonymousRequest, k: K, filters: Filters,
    session_id: SessionQuery = None, rules: RuleQueryDep = NO_RULES,
) -> RecommendationList:
    limit = services.settings.api_max_anonymous_items
    if len(body.items) > limit:
        raise HTTPException(422, f"at most {limit} items per session; got {len(body.items)}")
    ruled = reranker(services, await rule_request(services, rules, k, 0, body.rules), filters)
    depth = k if ruled is None else ruled.pool
    result, served = await recommend(
        services, "anonymous", session_id, depth, filters,
        lambda how: services.recommender.anonymous(body.items, depth, filters, how),
        finish=ruled)
    return await render(result, services.catalog, services.metrics, "anonymous",
                        ruled.members() if ruled else None, **served)  # type: ignore[return-value]
