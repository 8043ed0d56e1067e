"""``GET /metrics``: the Prometheus text format (docs/observability.md).

When access control is on it needs a credential with the ``metrics`` scope, or the
``[metrics] token`` (checked by the access layer). 404 when metrics are off.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response

from llmux.errors import NotFound

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    found = getattr(request.app.state.services, "metrics", None)
    if found is None:
        raise NotFound("metrics are off on this server ([metrics] enabled = false)")
    # the collectors walk the engine's and upstreams' counters: off the event loop
    body, content_type = await asyncio.to_thread(found.exposition)
    return Response(body, media_type=content_type)
