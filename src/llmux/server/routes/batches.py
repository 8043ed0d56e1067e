"""``/v1/batches``: create, list, show and cancel batches, in the OpenAI API's shapes
(docs/batch.md). The worker that runs them is in ``batch/worker.py``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request

from llmux.batch.batches import Batches, batch_object
from llmux.errors import NotFound
from llmux.protocols.openai.wire import BatchBody
from llmux.server.body import parse_body
from llmux.server.deps import context, services
from llmux.server.openapi import request_body

router = APIRouter(prefix="/v1/batches", tags=["batches"])


def batches(request: Request) -> Batches:
    found = services(request).batches
    if found is None:
        raise NotFound("this server has no batches (no database)")
    return found


@router.post("", openapi_extra=request_body(BatchBody))
async def create(request: Request) -> dict[str, Any]:
    body = await parse_body(request, BatchBody)
    return batch_object(await batches(request).create(context(request), body))


@router.get("")
async def listing(request: Request, after: str | None = None, limit: int = Query(20)) -> dict[str, Any]:  # fmt: skip
    rows, more = await batches(request).list(context(request), after=after, limit=limit)
    data = [batch_object(r) for r in rows]
    return {
        "object": "list", "data": data, "has_more": more,
        "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None,
    }  # fmt: skip


@router.get("/{batch_id}")
async def show(request: Request, batch_id: str) -> dict[str, Any]:
    return batch_object(await batches(request).get(context(request), batch_id))


@router.post("/{batch_id}/cancel")
async def cancel(request: Request, batch_id: str) -> dict[str, Any]:
    return batch_object(await batches(request).cancel(context(request), batch_id))
