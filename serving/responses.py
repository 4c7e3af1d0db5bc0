"""orjson responses and the one function that turns a Result into response JSON."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse

from serving.catalog import Catalog
from serving.fallback import Result
from serving.metrics import ApiMetrics


class OrjsonResponse(JSONResponse):
    """JSON via orjson (numpy scalars allowed). FastAPI's own ORJSONResponse is deprecated."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


async def render(result: Result, catalog: Catalog, metrics: ApiMetrics, endpoint: str,
                 **extra: Any) -> OrjsonResponse:
    """Items with their catalog details, model version and source."""
    metrics.count_response(endpoint, result.source)
    details = await catalog.details([item for item, _ in result.items])
    items = []
    for item, score in result.items:
        entry = {"item_id": item, "score": score}
        info = details.get(item)
        if info:
            entry.update(info)
        items.append(entry)
    return OrjsonResponse({
        **extra,
        "items": items,
        "model_version": result.model_version,
        "source": result.source,
        "fallback_sources": result.fallback_sources,
    })
