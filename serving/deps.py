"""FastAPI dependencies, as `Annotated` aliases the routes use in their signatures."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request, Security, status
from fastapi.security import APIKeyHeader

from recsys.events import MAX_ID_LENGTH
from serving.schemas import ID_PATTERN
from serving.state import Services


async def get_services(request: Request) -> Services:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:  # only when the app is used without its lifespan
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the API is starting")
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_k(
    services: ServicesDep,
    k: Annotated[int, Query(ge=1, description="How many items (1..api_max_k, default 500).")]
    = 10,
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
          description="Only recommend items of this catalog category."),
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
