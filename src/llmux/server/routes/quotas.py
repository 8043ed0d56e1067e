"""Quotas' routes: DeepSeek's ``/user/balance`` from the caller's budgets, usage totals
(``/api/usage`` for the caller's own, ``/admin/usage`` for everyone's; JSON or CSV),
and the admin API for per-scope limits and budgets (docs/quotas.md)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import APIRouter, Request, Response

from llmux.errors import InvalidRequest, NotFound
from llmux.limits import reports, rules
from llmux.limits.policy import Quotas
from llmux.protocols.quotas import BUDGET_SCOPES, LIMIT_SCOPES, BudgetBody, LimitBody
from llmux.server.body import parse_body
from llmux.server.deps import context, services, settings
from llmux.server.openapi import request_body
from llmux.storage.usage import BudgetRow, QuotaRow, SqlUsage

router = APIRouter(tags=["quotas"])


def quotas(request: Request) -> Quotas:
    found = services(request).quotas
    if found is None:
        raise InvalidRequest("this server keeps no quotas (no database)")
    return found


def repo(request: Request) -> SqlUsage:
    found = quotas(request).book.repo
    if found is None:
        raise InvalidRequest("this server keeps no usage records (no database)")
    return found


async def _resolved(request: Request, scope: str, kinds: tuple[str, ...]) -> str:
    """``rules.resolve_scope`` with this server's principals; a bad scope is a 400."""
    try:
        return await rules.resolve_scope(scope, kinds, services(request).access_control)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="scope") from None


# -- a caller's own ------------------------------------------------------------------------


@router.get("/user/balance")
async def balance(request: Request) -> dict[str, Any]:
    q = services(request).quotas
    if q is not None and q.book.repo is not None and q.prices is not None:
        found = await reports.balance(context(request), q.book, q.book.repo, q.prices.currency)
        if found is not None:
            return found
    s = settings(request).server  # no budget covers the caller: the configured figure
    return {
        "is_available": True,
        "balance_infos": [
            {
                "currency": s.balance_currency,
                "total_balance": s.balance_total,
                "granted_balance": "0.00",
                "topped_up_balance": s.balance_total,
            }
        ],
    }


def _answer(report: dict[str, Any], fmt: str | None) -> Any:
    if fmt in (None, "", "json"):
        return report
    if fmt == "csv":
        return Response(
            reports.usage_csv(report),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="usage.csv"'},
        )
    raise InvalidRequest("format is json or csv", param="format")


@router.get("/api/usage")
async def own_usage(
    request: Request,
    group_by: str | None = None,
    start: str | None = None,
    end: str | None = None,
    format: str | None = None,
) -> Any:
    """The caller's own usage: its user's (every key and client of theirs), or, for a
    caller without a user, its own."""
    ctx = context(request)
    query = reports.Query.parse(group_by, start, end)
    if any(g in ("user", "team") for g in query.group_by):
        raise InvalidRequest("your own usage groups by day, model, key, client or backend")
    p = ctx.principal
    user = p.user_id or (p.id if p.kind == "user" else None)
    where = {"user_id": user} if user else {"principal": rules.caller(ctx)}
    currency = quotas(request).prices
    report = await reports.usage_report(
        repo(request), query, currency.currency if currency else "", where
    )
    return _answer(report, format)


@router.get("/admin/usage")
async def all_usage(
    request: Request,
    group_by: str | None = None,
    start: str | None = None,
    end: str | None = None,
    format: str | None = None,
    user: str | None = None,
    key: str | None = None,
    model: str | None = None,
) -> Any:
    query = reports.Query.parse(group_by, start, end)
    where: dict[str, str] = {}
    if user:
        where["user_id"] = (await _resolved(request, f"user:{user}", ("user",)))[5:]
    if key:
        where["key_id"] = key
    if model:
        where["model"] = model
    q = quotas(request)
    report = await reports.usage_report(
        repo(request), query, q.prices.currency if q.prices else "", where
    )
    if q.usage is not None and format in (None, "", "json"):
        report["writer"] = q.usage.info()
    return _answer(report, format)


# -- per-scope limits ------------------------------------------------------------------------


@router.get("/admin/limits")
async def list_limits(request: Request) -> dict[str, Any]:
    book = quotas(request).book
    await book.reload()
    s = settings(request).limits
    return {
        "defaults": {
            "caller": {
                "requests_per_minute": s.requests_per_minute,
                "tokens_per_minute": s.tokens_per_minute,
                "concurrent_requests": s.concurrent_requests,
            },
            "global": {
                "requests_per_minute": s.global_requests_per_minute,
                "tokens_per_minute": s.global_tokens_per_minute,
                "concurrent_requests": s.global_concurrent_requests,
            },
            "models": {name: m.model_dump() for name, m in s.models.items()},
        },
        "limits": [q.public() for q in book.quotas.values()],
    }


@router.put("/admin/limits/{scope:path}", openapi_extra=request_body(LimitBody))
async def put_limits(request: Request, scope: str) -> dict[str, Any]:
    scope = await _resolved(request, scope, LIMIT_SCOPES)
    body = await parse_body(request, LimitBody)
    if body.model_dump(exclude_none=True) == {}:
        raise InvalidRequest(
            "set at least one of requests_per_minute, tokens_per_minute, concurrent_requests;"
            " DELETE removes a scope's limits"
        )
    row = QuotaRow(scope, **body.model_dump())
    await repo(request).put_quota(row)
    await quotas(request).book.reload()
    return row.public()


@router.delete("/admin/limits/{scope:path}", status_code=204)
async def delete_limits(request: Request, scope: str) -> Response:
    scope = await _resolved(request, scope, LIMIT_SCOPES)
    if not await repo(request).delete_quota(scope):
        raise NotFound(f"no limits are set for {scope!r}")
    await quotas(request).book.reload()
    return Response(status_code=204)


# -- budgets ----------------------------------------------------------------------------------


@router.get("/admin/budgets")
async def list_budgets(request: Request) -> dict[str, Any]:
    q = quotas(request)
    found = await repo(request).budgets()
    currency = q.prices.currency if q.prices else ""
    states = [await reports.budget_state(b, repo(request), q.budgets) for b in found]
    return {"currency": currency, "budgets": states}


@router.post("/admin/budgets", status_code=201, openapi_extra=request_body(BudgetBody))
async def put_budget(request: Request) -> dict[str, Any]:
    body = await parse_body(request, BudgetBody)
    scope = await _resolved(request, body.scope, BUDGET_SCOPES)
    row = await repo(request).put_budget(
        BudgetRow(uuid.uuid4().hex[:16], scope, body.period, body.micros(), time.time())
    )
    q = quotas(request)
    await q.book.reload()
    return await reports.budget_state(row, repo(request), q.budgets)


@router.delete("/admin/budgets/{budget_id}", status_code=204)
async def delete_budget(request: Request, budget_id: str) -> Response:
    if not await repo(request).delete_budget(budget_id):
        raise NotFound(f"no budget {budget_id!r}")
    await quotas(request).book.reload()
    return Response(status_code=204)


@router.post("/admin/budgets/reconcile")
async def reconcile(request: Request, fix: bool = True) -> dict[str, Any]:
    q = quotas(request)
    if q.budgets is None:
        raise InvalidRequest("this server keeps no budget counters")
    found = await repo(request).budgets()
    if q.usage is not None:
        await q.usage.flush()  # what this replica has queued is in the ledger first
    return {"budgets": await reports.reconcile(repo(request), q.budgets, found, fix)}
