"""Personalised recommendations for a user, and for an anonymous session."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.routing import APIRoute

from recsys.item_filter import ItemFilter
from serving.deps import (
    Filters,
    K,
    Offset,
    ServicesDep,
    SessionQuery,
    UserIdPath,
    plain_user_params,
)
from serving.experiments import recommend
from serving.responses import render
from serving.schemas import AnonymousRequest, ErrorOut, RecommendationList, UserRecommendations
from serving.state import Services

router = APIRouter(tags=["recommendations"],
                   responses={422: {"model": ErrorOut, "description": "bad parameters"}})


async def _for_user(services: Services, user_id: str, k: int, exclude_seen: bool,
                    filters: ItemFilter | None, offset: int = 0) -> Response:
    # A popularity variant serves the trending list (not paged: `offset` is the model's).
    result, served = await recommend(
        services, "user", user_id, k, filters,
        lambda how: services.recommender.for_user(user_id, k, exclude_seen, filters, offset,
                                                   how))
    return await render(result, services.catalog, services.metrics, "user", user_id=user_id,
                        **served)


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
                params = plain_user_params(request.path_params.get("user_id", ""),
                                           request.query_params.multi_items(),
                                           services.settings.api_max_k,
                                           services.settings.api_filter_attributes)
                if params is not None:
                    return await _for_user(services, *params)
            return await standard(request)

        return handler


async def user_recommendations(
    services: ServicesDep,
    user_id: UserIdPath,
    k: K,
    filters: Filters,
    exclude_seen: Annotated[bool, Query(description="Leave out items the user has seen.")]
    = True,
    offset: Offset = 0,
) -> UserRecommendations:
    return await _for_user(services, user_id, k, exclude_seen, filters,
                           offset)  # type: ignore[return-value]


router.add_api_route("/v1/users/{user_id}/recommendations", user_recommendations,
                     methods=["GET"], response_model=UserRecommendations,
                     summary="Personalised top-k for a user",
                     description="Items `offset` .. `offset + k - 1` of the user's ranking. "
                     "The model's ranking is ordered by score, then by the item's row, so "
                     "the pages of one model version and user state neither overlap nor "
                     "skip an item (a new event of the user, or a model switch, re-ranks).",
                     route_class_override=PersonalisedRoute)


@router.post("/v1/recommendations/anonymous", response_model=RecommendationList,
             summary="Recommendations for a visitor without id, from their session")
async def anonymous_recommendations(
    services: ServicesDep, body: AnonymousRequest, k: K, filters: Filters,
    session_id: SessionQuery = None,
) -> RecommendationList:
    limit = services.settings.api_max_anonymous_items
    if len(body.items) > limit:
        raise HTTPException(422, f"at most {limit} items per session; got {len(body.items)}")
    result, served = await recommend(
        services, "anonymous", session_id, k, filters,
        lambda how: services.recommender.anonymous(body.items, k, filters, how))
    return await render(result, services.catalog, services.metrics, "anonymous",
                        **served)  # type: ignore[return-value]
