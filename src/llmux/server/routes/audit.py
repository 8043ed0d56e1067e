"""The audit trail's admin API (docs/observability.md#audit-trail): search
(``GET /admin/audit``, also ``GET /v1/audit``), JSONL export, the chain's verification
and the trail's state. Admins only; a bad filter is a 400 naming the parameter."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.responses import StreamingResponse

from llmux.audit.query import Search
from llmux.audit.trail import AuditTrail
from llmux.audit.verify import verify
from llmux.errors import InvalidRequest
from llmux.server.deps import services
from llmux.storage.audit import Filter, SqlAudit

router = APIRouter(tags=["audit"])
JSONL = "application/x-ndjson"


def trail(request: Request) -> AuditTrail:
    found = services(request).audit
    if found is None:
        raise InvalidRequest(
            "this server keeps no audit trail: set [audit] enabled = true (it needs the database)"
        )
    return found


def _search(request: Request) -> Search:
    q = request.query_params
    return Search.parse(
        since=q.get("since"), until=q.get("until"), principal=q.get("principal"),
        model=q.get("model"), status=q.get("status"), kind=q.get("kind"),
        request_id=q.get("request_id"), limit=q.get("limit"), cursor=q.get("cursor"),
    )  # fmt: skip


async def _lines(repo: SqlAudit, where: Filter) -> AsyncIterator[bytes]:
    async for record in repo.export(where):
        yield json.dumps(record, sort_keys=True, separators=(",", ":"),
                         ensure_ascii=False).encode() + b"\n"  # fmt: skip


def _export(repo: SqlAudit, where: Filter) -> StreamingResponse:
    return StreamingResponse(
        _lines(repo, where), media_type=JSONL,
        headers={"Content-Disposition": 'attachment; filename="audit.jsonl"'},
    )  # fmt: skip


async def _answer(request: Request) -> Any:
    found = trail(request)
    search = _search(request)
    fmt = request.query_params.get("format") or "json"
    if fmt not in ("json", "jsonl"):
        raise InvalidRequest("format is json or jsonl", param="format")
    await found.flush()  # what this replica has spooled is in the answer too
    if fmt == "jsonl":
        return _export(found.repo, search.where)
    rows, cursor = await found.repo.query(search.where, search.limit, search.cursor)
    return {"object": "list", "data": rows, "next_cursor": cursor}


@router.get("/admin/audit")
async def search(request: Request) -> Any:
    """Records, newest first: ``since``, ``until``, ``principal``, ``model``, ``status``,
    ``kind``, ``request_id``, ``limit``, ``cursor``; ``format=jsonl`` exports them."""
    return await _answer(request)


@router.get("/v1/audit")
async def search_v1(request: Request) -> Any:
    """``GET /admin/audit`` under the name the brief's tutorials use (admins only)."""
    return await _answer(request)


@router.get("/admin/audit/export")
async def export(request: Request) -> Response:
    """Every matching record as JSON lines, oldest first, each with its ``hash``: the
    spool's format, which ``llmux audit verify --file`` checks offline."""
    found = trail(request)
    where = _search(request).where
    await found.flush()
    return _export(found.repo, where)


@router.get("/admin/audit/verify")
async def check(request: Request) -> dict[str, Any]:
    """The chain of every replica walked: gaps, edited rows, broken links."""
    found = trail(request)
    await found.flush()
    report = await verify(found.repo, expected=found.drained())
    return report.public()


@router.get("/admin/audit/status")
async def status(request: Request) -> dict[str, Any]:
    """This replica's spool: its seq, what is on disk, the backlog not yet drained."""
    return trail(request).info()
