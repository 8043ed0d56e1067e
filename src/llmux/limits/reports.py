"""What quotas answer with: a caller's balance, usage totals over a time range, and the
reconciliation of the budget counters with the ledger. Used by the routes and the CLI.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from llmux.core.context import RequestContext
from llmux.errors import InvalidRequest
from llmux.limits import rules
from llmux.limits.book import QuotaBook
from llmux.limits.budgets import BudgetCounters, counter_key, money, window
from llmux.storage.usage import GROUPS, BudgetRow, SqlUsage

MAX_RANGE_S = 366 * 86_400
DEFAULT_RANGE_S = 30 * 86_400


def parse_time(value: str | None, name: str) -> float | None:
    """Unix seconds, or an ISO 8601 date or date-time (UTC unless it says otherwise)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"{name}: {value!r} is neither unix seconds nor an ISO date (2026-12-01)", param=name
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@dataclass(frozen=True, slots=True)
class Query:
    group_by: list[str]
    start: float
    end: float

    @classmethod
    def parse(cls, group_by: str | None, start: str | None, end: str | None) -> Query:
        groups = [g.strip() for g in (group_by or "day").split(",") if g.strip()]
        unknown = [g for g in groups if g not in GROUPS]
        if unknown or len(groups) > 3:
            raise InvalidRequest(
                f"group_by: up to three of {', '.join(GROUPS)}; got {group_by!r}",
                param="group_by",
            )
        stop = parse_time(end, "end") or time.time()
        begin = parse_time(start, "start")
        if begin is None:
            begin = stop - DEFAULT_RANGE_S
        if begin >= stop:
            raise InvalidRequest("start must come before end", param="start")
        if stop - begin > MAX_RANGE_S:
            raise InvalidRequest("the range is at most 366 days; narrow start/end", param="start")
        return cls(list(dict.fromkeys(groups)), begin, stop)


async def usage_report(
    repo: SqlUsage, query: Query, currency: str, where: dict[str, str] | None = None
) -> dict[str, Any]:
    rows = await repo.totals(query.group_by, query.start, query.end, where)
    total = {
        k: sum(int(r[k]) for r in rows)
        for k in ("requests", "prompt_tokens", "completion_tokens", "cached_tokens", "cost_micros")
    }
    for r in [*rows, total]:
        r["total_tokens"] = int(r["prompt_tokens"]) + int(r["completion_tokens"])
        r["cost"] = money(int(r["cost_micros"]))
    return {
        "object": "usage",
        "group_by": query.group_by,
        "start": query.start,
        "end": query.end,
        "currency": currency,
        "data": rows,
        "total": total,
    }


CSV_COLUMNS = [
    "requests", "prompt_tokens", "completion_tokens", "cached_tokens", "total_tokens",
    "cost", "cost_micros",
]  # fmt: skip


def usage_csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    groups = list(report["group_by"])
    writer.writerow([*groups, *CSV_COLUMNS, "currency"])
    for row in report["data"]:
        writer.writerow(
            [row.get(g) or "" for g in groups]
            + [row[c] for c in CSV_COLUMNS]
            + [report["currency"]]
        )
    return out.getvalue()


async def balance(
    ctx: RequestContext, book: QuotaBook, repo: SqlUsage, currency: str
) -> dict[str, Any] | None:
    """DeepSeek's balance from the caller's budgets: the least any of them has left
    (budget minus the ledger); None when no budget covers the caller."""
    found = rules.budgets(ctx, await book.current())
    if not found:
        return None
    left = []
    for b in found:
        _, start, end = window(b.period)
        left.append(b.amount_micros - await repo.spent(b, start, end))
    least = max(0, min(left))
    return {
        "is_available": least > 0,
        "balance_infos": [
            {
                "currency": currency,
                "total_balance": money(least),
                "granted_balance": money(least),
                "topped_up_balance": "0.00",
            }
        ],
    }


async def budget_state(
    b: BudgetRow, repo: SqlUsage, counters: BudgetCounters | None
) -> dict[str, Any]:
    key, start, end = window(b.period)
    spent = await repo.spent(b, start, end)
    counter, held = (await counters.state(counter_key(b))) if counters else (None, 0)
    return {
        "id": b.id,
        "scope": b.scope,
        "period": b.period,
        "window": key,
        "amount": money(b.amount_micros),
        "amount_micros": b.amount_micros,
        "spent": money(spent),
        "spent_micros": spent,
        "left": money(b.amount_micros - spent),
        "held_micros": held,
        "counter_micros": counter,
    }


async def reconcile(
    repo: SqlUsage, counters: BudgetCounters, budgets: list[BudgetRow], fix: bool = True
) -> list[dict[str, Any]]:
    """For each budget's current period: the ledger's sum, the counter, the drift
    between them and, with ``fix``, the counter set to the ledger (only if no settle
    moved it in between; else it is reported as moved and left for the next run)."""
    out = []
    for b in budgets:
        key = counter_key(b)
        before, _ = await counters.state(key)
        _, start, end = window(b.period)
        ledger = await repo.spent(b, start, end)
        seen, held = await counters.state(key)
        drift = None if seen is None else seen - ledger
        fixed = False
        if fix and seen is not None and drift and before == seen:
            fixed = await counters.reconcile(key, ledger, seen)
        out.append({
            "budget": b.id, "scope": b.scope, "period": b.period, "ledger_micros": ledger,
            "counter_micros": seen, "held_micros": held, "drift_micros": drift, "fixed": fixed,
        })  # fmt: skip
    return out
