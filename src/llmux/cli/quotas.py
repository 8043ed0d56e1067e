"""``llmux usage``, ``llmux limits`` and ``llmux budgets``: quotas from the server's own
machine, on the database (and Redis) that ``llmux serve`` is configured with. A change
reaches running replicas within ``[limits] refresh_s``."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from llmux.cli.common import ConfigOpt, err, fail, out, settings
from llmux.config import Settings

T = TypeVar("T")
limits = typer.Typer(help="Per-key, per-user, per-client and per-model limits.",
                     no_args_is_help=True)  # fmt: skip
budgets = typer.Typer(help="Budgets: what a key, user, client or team may spend.",
                      no_args_is_help=True)  # fmt: skip


@dataclass
class Quotas:
    settings: Settings
    repo: Any  # SqlUsage
    access: Any  # AccessControl
    counters: Any  # BudgetCounters | None

    async def scope(self, text: str, kinds: tuple[str, ...]) -> str:
        from llmux.limits.rules import resolve_scope

        return await resolve_scope(text, kinds, self.access)


def _run(config: Path | None, work: Callable[[Quotas], Awaitable[T]]) -> T:
    from llmux.errors import LlmuxError
    from llmux.limits.budgets import RedisBudgets
    from llmux.limits.gcra import UNREACHABLE, RedisLimiter
    from llmux.services import access_control
    from llmux.storage.database import Database, database_url
    from llmux.storage.usage import SqlUsage

    conf = settings(config)

    async def go() -> T:
        db = Database(database_url(conf.storage.database_url, conf.home_dir))
        limiter = RedisLimiter(conf.redis.url, conf.redis.prefix) if conf.redis.url else None
        try:
            await db.open()
            counters = RedisBudgets(limiter.scripts, conf.redis.prefix) if limiter else None
            return await work(Quotas(conf, SqlUsage(db), access_control(conf, db), counters))
        finally:
            if limiter is not None:
                await limiter.aclose()
            await db.aclose()

    try:
        return asyncio.run(go())
    except LlmuxError as exc:
        fail(exc.message)
    except UNREACHABLE as exc:
        fail(f"Redis at [redis] url cannot be reached: {exc}")
    except ValueError as exc:
        fail(str(exc))


def _n(value: Any) -> str:
    return "-" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


# -- usage ---------------------------------------------------------------------------------


def usage(
    group_by: Annotated[str, typer.Option("--by", help="day, model, key, user, client, "
                                          "team, backend (comma-separated, up to 3)")] = "day",
    start: Annotated[str | None, typer.Option(help="ISO date or unix seconds (default: 30 days ago)")] = None,
    end: Annotated[str | None, typer.Option(help="ISO date or unix seconds (default: now)")] = None,
    user: Annotated[str | None, typer.Option(help="only this user (name or id)")] = None,
    model: Annotated[str | None, typer.Option(help="only this model")] = None,
    csv: Annotated[bool, typer.Option("--csv", help="CSV instead of a table")] = False,
    config: ConfigOpt = None,
) -> None:  # fmt: skip
    """Requests, tokens and cost, grouped by day, model, key or user."""
    from llmux.limits import reports

    async def work(q: Quotas) -> dict[str, Any]:
        where: dict[str, str] = {}
        if user:
            where["user_id"] = (await q.access.user(user)).id
        if model:
            where["model"] = model
        query = reports.Query.parse(group_by, start, end)
        return await reports.usage_report(q.repo, query, q.settings.prices.currency, where)

    report = _run(config, work)
    if csv:
        out.print(reports.usage_csv(report), end="", markup=False)
        return
    groups = list(report["group_by"])
    table = Table(*[g.upper() for g in groups], "REQUESTS", "PROMPT", "COMPLETION", "CACHED",
                  f"COST ({report['currency']})", title="usage")  # fmt: skip
    numbers = ("requests", "prompt_tokens", "completion_tokens", "cached_tokens")
    for row in report["data"]:
        table.add_row(*[str(row.get(g) or "-") for g in groups],
                      *[_n(int(row[k])) for k in numbers], row["cost"])  # fmt: skip
    t = report["total"]
    table.add_row(*(["total"] + [""] * (len(groups) - 1)), *[_n(int(t[k])) for k in numbers],
                  t["cost"], style="bold")  # fmt: skip
    out.print(table)


# -- limits --------------------------------------------------------------------------------

SCOPE_HELP = "key:ID, user:NAME, client:ID or model:NAME"


@limits.command("set")
def limits_set(
    scope: Annotated[str, typer.Argument(help=SCOPE_HELP)],
    rpm: Annotated[int | None, typer.Option("--rpm", min=1, help="requests per minute")] = None,
    tpm: Annotated[int | None, typer.Option("--tpm", min=1, help="tokens per minute")] = None,
    concurrent: Annotated[int | None, typer.Option("--concurrent", min=1, help="requests at once")] = None,
    config: ConfigOpt = None,
) -> None:  # fmt: skip
    """Set a scope's limits (the ones not given are unset)."""
    from llmux.protocols.quotas import LIMIT_SCOPES
    from llmux.storage.usage import QuotaRow

    if rpm is None and tpm is None and concurrent is None:
        fail("give at least one of --rpm, --tpm, --concurrent (`llmux limits delete` removes)")

    async def work(q: Quotas) -> QuotaRow:
        row = QuotaRow(await q.scope(scope, LIMIT_SCOPES), rpm, tpm, concurrent)
        await q.repo.put_quota(row)
        return row

    row = _run(config, work)
    err.print(f"limits for {row.scope}: rpm {_n(rpm)}, tpm {_n(tpm)}, at once {_n(concurrent)}")


@limits.command("list")
def limits_list(config: ConfigOpt = None) -> None:
    """The limits set per scope (``[limits]`` in the settings holds the defaults)."""
    rows = _run(config, lambda q: q.repo.quotas())
    table = Table("SCOPE", "RPM", "TPM", "AT ONCE")
    for r in rows:
        table.add_row(r.scope, _n(r.requests_per_minute), _n(r.tokens_per_minute),
                      _n(r.concurrent_requests))  # fmt: skip
    out.print(table)


@limits.command("delete")
def limits_delete(
    scope: Annotated[str, typer.Argument(help=SCOPE_HELP)], config: ConfigOpt = None
) -> None:
    """Remove a scope's limits."""
    from llmux.protocols.quotas import LIMIT_SCOPES

    async def work(q: Quotas) -> bool:
        return bool(await q.repo.delete_quota(await q.scope(scope, LIMIT_SCOPES)))

    if not _run(config, work):
        fail(f"no limits are set for {scope}")
    err.print(f"removed the limits of {scope}")


# -- budgets -------------------------------------------------------------------------------


@budgets.command("set")
def budgets_set(
    scope: Annotated[str, typer.Argument(help="key:ID, user:NAME, client:ID or team:NAME")],
    amount: Annotated[str, typer.Argument(help="in [prices] currency, e.g. 25.00")],
    period: Annotated[str, typer.Option(help="day, month or total")] = "month",
    config: ConfigOpt = None,
) -> None:
    """Create a budget, or change its amount."""
    from llmux.limits.budgets import money, parse_money
    from llmux.protocols.quotas import BUDGET_SCOPES
    from llmux.storage.usage import BudgetRow

    if period not in ("day", "month", "total"):
        fail("--period is day, month or total")
    try:
        micros = parse_money(amount)
    except ValueError as exc:
        fail(str(exc))

    async def work(q: Quotas) -> BudgetRow:
        row = BudgetRow(uuid.uuid4().hex[:16], await q.scope(scope, BUDGET_SCOPES),
                        period, micros, time.time())  # type: ignore[arg-type]  # fmt: skip
        return await q.repo.put_budget(row)  # type: ignore[no-any-return]

    row = _run(config, work)
    currency = settings(config).prices.currency
    err.print(
        f"budget {row.id}: {money(row.amount_micros)} {currency} per {row.period} for {row.scope}"
    )


@budgets.command("list")
def budgets_list(config: ConfigOpt = None) -> None:
    """Each budget with what its current period has spent (from the ledger)."""
    from llmux.limits import reports

    async def work(q: Quotas) -> list[dict[str, Any]]:
        return [await reports.budget_state(b, q.repo, q.counters) for b in await q.repo.budgets()]

    states = _run(config, work)
    table = Table("ID", "SCOPE", "PERIOD", "WINDOW", "AMOUNT", "SPENT", "LEFT")
    for s in states:
        table.add_row(s["id"], s["scope"], s["period"], s["window"], s["amount"], s["spent"],
                      s["left"])  # fmt: skip
    out.print(table)


@budgets.command("delete")
def budgets_delete(budget_id: str, config: ConfigOpt = None) -> None:
    """Remove a budget."""
    if not _run(config, lambda q: q.repo.delete_budget(budget_id)):
        fail(f"no budget {budget_id!r}")
    err.print(f"removed budget {budget_id}")


@budgets.command("reconcile")
def budgets_reconcile(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="report, change nothing")] = False,
    config: ConfigOpt = None,
) -> None:
    """Compare each budget's Redis counter with the ledger, and set it right."""
    from llmux.limits import reports

    async def work(q: Quotas) -> list[dict[str, Any]]:
        if q.counters is None:
            fail("no [redis] url: the counters live in each server process, which "
                 "reconciles them itself (POST /admin/budgets/reconcile)")  # fmt: skip
        return await reports.reconcile(q.repo, q.counters, await q.repo.budgets(), not dry_run)

    rows = _run(config, work)
    table = Table("BUDGET", "SCOPE", "PERIOD", "LEDGER", "COUNTER", "HELD", "DRIFT", "FIXED")
    for r in rows:
        table.add_row(r["budget"], r["scope"], r["period"], _n(r["ledger_micros"]),
                      _n(r["counter_micros"]), _n(r["held_micros"]), _n(r["drift_micros"]),
                      "yes" if r["fixed"] else "")  # fmt: skip
    out.print(table)
    drifted = [r for r in rows if r["drift_micros"] and not r["fixed"]]
    if drifted:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("usage")(usage)
    app.add_typer(limits, name="limits")
    app.add_typer(budgets, name="budgets")
