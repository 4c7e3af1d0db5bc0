"""orjson responses and the one function that turns a Result into response JSON."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse, Response

from serving.catalog import Catalog
from serving.fallback import Result
from serving.telemetry import ApiMetrics


class OrjsonResponse(JSONResponse):
    """JSON via orjson (numpy scalars allowed). FastAPI's own ORJSONResponse is deprecated."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


async def render(result: Result, catalog: Catalog, metrics: ApiMetrics, endpoint: str,
                 item_members: list[bytes] | None = None, **extra: Any) -> Response:
    """Items with their catalog details, model version and source.

    The same JSON as serialising {**extra, "items": [{"item_id", "score", ["fresh": true],
    **details}, ...],
    "model_version", "source", "fallback_sources"}, built from cached serialised details:
    the item list is most of a response's serialisation cost. `item_members` adds
    serialised members (`,"pinned":true`...) to each item, in order.
    """
    metrics.count_response(endpoint, result.source)
    ids = [item for item, _ in result.items]
    members = await catalog.detail_members(ids)
    if item_members is not None:
        members = [more + own for more, own in zip(members, item_members, strict=True)]
    dumps = orjson.dumps
    if ids:
        # One dumps for all scores (orjson's float formatting); a number has no comma.
        scores = dumps([score for _, score in result.items],
                       option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].split(b",")
        fresh = set(result.fresh)
        items = b"[" + b",".join([b'{"item_id":%b,"score":%b%b%b}' % (
            dumps(item), score, b',"fresh":true' if item in fresh else b"", more)
            for item, score, more in zip(ids, scores, members, strict=True)]) + b"]"
    else:
        items = b"[]"
    return Response(dumps({**extra, "items": orjson.Fragment(items),
                           "model_version": result.model_version, "source": result.source,
                           "fallback_sources": result.fallback_sources}),
                    media_type="application/json")
