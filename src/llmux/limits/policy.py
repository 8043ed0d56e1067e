"""The quota policy: limits and budgets before a model operation, the charge and the
usage record after it. Metadata only, so the relay fast path stays on.

**Before** (``__call__``): every limit that applies (``rules.py``) is checked and charged
in one atomic step (``gcra.py``): requests, the request's token reservation
(``estimate.py``), a concurrency lease. A refusal is a 429 in the API's shape with
``Retry-After`` (whole seconds, rounded up, never above :data:`MAX_RETRY_S`),
``retry-after-ms`` and OpenAI's ``x-ratelimit-*`` headers, which an admitted response
carries too. A prompt larger than a token limit can never be admitted: 400. Then the
request's most expensive outcome is held against its budgets (``budgets.py``); one that
cannot cover it is a 402 with DeepSeek's "Insufficient Balance" and
``x-should-retry: false``, and the limits charged a moment ago are given back.

**After** (``finished``): the charge is the reported usage (a reply from the response
cache pays its prompt at the cached-input price and no completion); without one, a stream the
client cancelled is charged its prompt and the pieces it received, an upstream failure
keeps the whole reservation, and a refusal by the backend (4xx) costs nothing. The token
limits move by the difference, the lease is returned, and the usage record, with its
cost, goes to the usage writer (``usage.py``), which settles the budgets after the
ledger has it.

Without Redis the counters live in this process (one replica). With ``[redis] url`` set
but Redis unreachable, requests that a limit or budget applies to get 503, or, with
``[limits] redis_down = "share"``, each replica enforces its share of each limit
(limit / ``replicas``) by itself until Redis answers again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from llmux.config import LimitsSettings
from llmux.core.context import RequestContext, new_request_id
from llmux.errors import InvalidRequest, PaymentRequired, RateLimited, ServerBusy
from llmux.limits import rules
from llmux.limits.book import QuotaBook
from llmux.limits.budgets import BudgetCounters, Hold, PriceTable, counter_key, money, window
from llmux.limits.estimate import (
    Counter,
    Estimate,
    embed_estimate,
    estimate,
    prompt_bound,
    relay_estimate,
)
from llmux.limits.gcra import UNREACHABLE, Decision, Limit, Limiter, MemoryLimiter
from llmux.limits.usage import Entry, UsageLog
from llmux.policies import Handler, Operation, Outcome, PassThrough, Usage
from llmux.storage.usage import BudgetRow, UsageRecord

log = logging.getLogger(__name__)
MAX_RETRY_S = 120.0  # openai-python gives up on a Retry-After above 60 s; never send more
INSUFFICIENT = "Insufficient Balance"


@dataclass(slots=True)
class Ticket:
    """One admitted operation, until its outcome is known."""

    op: Operation
    record_id: str
    limits: list[Limit] = field(default_factory=list)
    limiter: Limiter | None = None
    lease: str = ""
    estimate: Estimate | None = None
    holds: list[Hold] = field(default_factory=list)

    @property
    def leases(self) -> list[Limit]:
        return [limit for limit in self.limits if limit.kind == "lease"]


class Quotas(PassThrough):
    needs_body = False

    def __init__(
        self,
        settings: LimitsSettings,
        limiter: Limiter | None = None,
        *,
        book: QuotaBook | None = None,
        prices: PriceTable | None = None,
        budgets: BudgetCounters | None = None,
        usage: UsageLog | None = None,
        counter: Counter | None = None,
        shared: bool = False,
    ) -> None:
        self.settings = settings
        self.limiter = limiter
        self.book = book or QuotaBook(None)
        self.prices = prices
        self.budgets = budgets
        self.usage = usage
        self.counter = counter  # exact prompt tokens on the local engine
        self.fallback = MemoryLimiter() if shared and settings.redis_down == "share" else None
        self._open: dict[int, list[Ticket]] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._reconciler: asyncio.Task[None] | None = None
        self._down_logged = 0.0

    # -- before ----------------------------------------------------------------------------

    def __call__(self, ctx: RequestContext, op: Operation, next: Handler) -> AsyncIterator[Any]:
        return self._run(ctx, op, next)

    async def _run(self, ctx: RequestContext, op: Operation, next: Handler) -> AsyncIterator[Any]:
        ticket = await self.admit(ctx, op)
        self._open.setdefault(id(ctx), []).append(ticket)
        async for item in next(ctx, op):
            yield item

    async def admit(self, ctx: RequestContext, op: Operation) -> Ticket:
        if self.usage is not None:
            await self.usage.room()
        book = await self.book.current()
        ticket = Ticket(op, self._record_id(ctx))
        # a call llmux makes for a request (a judge) counts as usage, not against limits
        limits = (
            rules.limits(ctx, op, book, self.settings) if self.limiter and not ctx.internal else []
        )
        holds = rules.budgets(ctx, book) if self.budgets and self.prices else []
        priced = bool(holds) and self.prices is not None and not self.prices.price(op.model).free
        if any(limit.tally for limit in limits) or priced:
            ticket.estimate = await self._estimate(op)
        if limits:
            limits = self._costed(limits, ticket.estimate)
            ticket.lease = ticket.record_id if any(lim.kind == "lease" for lim in limits) else ""
            ticket.limiter, decision = await self._acquire(limits, ticket.lease)
            ticket.limits = limits
            ctx.headers.update(headers(limits, decision))
            if not decision.allowed:
                refused = refusal(limits, decision)
                ctx.facts["refused"] = refused.reason
                raise refused
        if priced and ticket.estimate is not None and self.prices is not None:
            most = self.prices.most(op.model, ticket.estimate.prompt, ticket.estimate.output)
            ticket.holds = [Hold(b, counter_key(b), most, b.amount_micros) for b in holds]
            try:
                await self._hold(ticket, book)
            except PaymentRequired:
                ctx.facts["refused"] = "budget"
                raise
        if ticket.leases or ticket.holds:
            self._keep_renewing()
        return ticket

    @staticmethod
    def _record_id(ctx: RequestContext) -> str:
        """A new id for this operation's record, hold and lease: the request id is the
        client's to choose and may repeat, so it cannot key what is charged once."""
        return new_request_id()

    async def _estimate(self, op: Operation) -> Estimate:
        default = self.settings.default_output_tokens
        if op.embed is not None:
            return embed_estimate(op.embed)
        if not op.requests:  # the relay fast path
            return relay_estimate(op.body_size, op.max_output, op.choices, default)
        counter = self.counter if op.backend == "local" else None
        return await estimate(op.requests, default, counter)

    def _costed(self, limits: list[Limit], est: Estimate | None) -> list[Limit]:
        """Token limits charged the reservation; a prompt that can never fit is a 400."""
        out = []
        for limit in limits:
            if limit.tally and est is not None:
                if est.exact and est.prompt > limit.count:
                    raise InvalidRequest(
                        f"this request's prompt is {est.prompt} tokens, more than the limit of "
                        f"{limit.count} tokens per minute, so it can never be admitted; send a "
                        "shorter prompt or ask for a higher limit"
                    )
                limit = Limit(limit.key, limit.count, limit.period_s, min(est.total, limit.count),
                              "rate", True)  # fmt: skip
            out.append(limit)
        return out

    async def _acquire(self, limits: list[Limit], lease: str) -> tuple[Limiter, Decision]:
        assert self.limiter is not None
        try:
            return self.limiter, await self.limiter.acquire(limits, lease)
        except UNREACHABLE as exc:
            if self.fallback is None:
                raise self._unreachable(exc) from None
            self._log_down(exc)
            share = [_share(limit, self.settings.replicas) for limit in limits]
            return self.fallback, await self.fallback.acquire(share, lease)

    async def _hold(self, ticket: Ticket, book: QuotaBook) -> None:
        assert self.budgets is not None and self.usage is not None
        repo = self.usage.repo

        async def seed(budget: BudgetRow) -> int:
            _, start, end = window(budget.period)
            return await repo.spent(budget, start, end)

        try:
            refused = await self.budgets.hold(ticket.record_id, ticket.holds, seed)
        except UNREACHABLE as exc:
            await self._give_back(ticket)
            raise self._unreachable(exc) from None
        except BaseException:
            await self._give_back(ticket)
            raise
        if refused is not None:
            await self._give_back(ticket)
            most = ticket.holds[0].amount
            ticket.holds = []
            currency = self.prices.currency if self.prices else ""
            raise PaymentRequired(
                f"{INSUFFICIENT}: the {refused.budget.period} budget of {refused.budget.scope} "
                f"has {money(refused.available)} {currency} left, and this request may cost up "
                f"to {money(most)} {currency}; ask an administrator to raise the budget, or "
                "lower max_tokens",
                headers={"x-should-retry": "false"},
            )

    async def _give_back(self, ticket: Ticket) -> None:
        """Undo the limits' charge of a request refused after them (by its budget)."""
        if ticket.limiter is None:
            return
        changes = [(lim, -lim.cost) for lim in ticket.limits if lim.kind == "rate"]
        changes += [(lim, 0) for lim in ticket.leases]
        try:
            await ticket.limiter.settle(changes, ticket.lease)
        except UNREACHABLE as exc:
            log.warning("could not give back a refused request's limits: %s", exc)
        ticket.limiter = None

    def _unreachable(self, exc: BaseException) -> ServerBusy:
        self._log_down(exc)
        return ServerBusy(
            "limits and budgets are kept in Redis, which cannot be reached; try again shortly",
            retry_after=1,
        )

    def _log_down(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._down_logged > 60:
            self._down_logged = now
            mode = "each replica counts its share" if self.fallback else "refusing (503)"
            log.warning("Redis is unreachable (%s); %s", exc, mode)

    # -- leases and holds --------------------------------------------------------------------

    def _keep_renewing(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.ensure_future(self._renew_leases())

    async def _renew_leases(self) -> None:
        """Every lease_s / 3, renew the concurrency leases and budget holds of the
        requests still running; stop when none is."""
        period = self.settings.lease_s / 3
        while True:
            await asyncio.sleep(period)
            live = [t for tickets in self._open.values() for t in tickets if t.leases or t.holds]
            if not live:
                return
            for t in live:
                if t.holds and self.budgets is not None:
                    try:
                        await self.budgets.renew(t.record_id, t.holds)
                    except UNREACHABLE as exc:
                        log.warning("could not renew the budget holds of %s: %s", t.record_id, exc)
            by_limiter: dict[int, tuple[Limiter, list[tuple[Limit, str]]]] = {}
            for t in live:
                if t.limiter is not None:
                    entry = by_limiter.setdefault(id(t.limiter), (t.limiter, []))
                    entry[1].extend((lim, t.lease) for lim in t.leases)
            for limiter, leases in by_limiter.values():
                try:
                    await limiter.renew(leases)
                except UNREACHABLE as exc:
                    log.warning("could not renew %d concurrency leases: %s", len(leases), exc)

    # -- after -----------------------------------------------------------------------------

    def finished(self, ctx: RequestContext, op: Operation, outcome: Outcome) -> None:
        tickets = self._open.get(id(ctx))
        if not tickets:
            return  # refused before it started
        ticket = next((t for t in tickets if t.op is op), tickets[0])
        tickets.remove(ticket)
        if not tickets:
            del self._open[id(ctx)]
        usage = charge(op, outcome, ticket.estimate)
        cost = self.prices.cost(op.model, billed(usage, outcome)) if self.prices else 0
        if cost and self.prices is not None:
            ctx.facts["cost"] = (cost, self.prices.currency)  # micro-units, for the metrics
        if ticket.limiter is not None:
            self._settle(ticket, usage)
        if self.usage is not None:
            record = usage_record(ctx, op, outcome, usage, cost, ticket, self.book)
            self.usage.put(Entry(record, ticket.holds, [cost] * len(ticket.holds)))

    def _settle(self, ticket: Ticket, usage: Usage) -> None:
        """Move the token limits by what the request really used and give back its
        lease; sent with the next batch of script calls, not waited for (no task)."""
        assert ticket.limiter is not None
        spent = usage.prompt_tokens + usage.completion_tokens
        changes = [(lim, spent - lim.cost) for lim in ticket.limits if lim.tally]
        changes += [(lim, 0) for lim in ticket.leases]
        if changes:
            try:
                ticket.limiter.settle_later(changes, ticket.lease)
            except UNREACHABLE as exc:
                log.warning("could not settle the token limits of %s: %s", ticket.record_id, exc)

    # -- the reconcile job -------------------------------------------------------------------

    def start(self, every_s: float) -> None:
        """Reconcile the budget counters with the ledger every ``every_s`` (each replica
        does; compare-and-set keeps them from undoing each other's settles)."""
        if every_s > 0 and self.budgets is not None and self.usage is not None:
            self._reconciler = asyncio.ensure_future(self._reconcile_forever(every_s))

    async def _reconcile_forever(self, every_s: float) -> None:
        from llmux.limits.reports import reconcile

        assert self.budgets is not None and self.usage is not None
        while True:
            await asyncio.sleep(every_s)
            try:
                found = await self.usage.repo.budgets()
                for row in await reconcile(self.usage.repo, self.budgets, found):
                    if row["drift_micros"]:
                        log.warning(
                            "budget %s (%s) drifted by %d micro-units from the ledger; %s",
                            row["budget"], row["scope"], row["drift_micros"],
                            "set right" if row["fixed"] else "moved meanwhile, next time",
                        )  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - the database or Redis failing: next time
                log.warning("could not reconcile the budgets: %s", exc)

    async def aclose(self) -> None:
        for task in (self._renewer, self._reconciler):
            if task is not None:
                task.cancel()
        await self.book.aclose()


def _share(limit: Limit, replicas: int) -> Limit:
    count = max(1, limit.count // replicas)
    return Limit(limit.key, count, limit.period_s, min(limit.cost, count), limit.kind, limit.tally)


def charge(op: Operation, outcome: Outcome, est: Estimate | None) -> Usage:
    """What the operation is charged: the reported usage; else (no usage came back)
    nothing for a refusal by the backend, the whole reservation for an upstream failure,
    and the prompt plus the pieces streamed for a cancelled or failed local stream."""
    u = outcome.usage
    if outcome.usage_known:
        return u
    error = outcome.error
    if error is not None and not outcome.cancelled and error.status < 500:
        return Usage()
    if est is None:  # no limit needed one before: the prompt's upper bound
        est = Estimate(sum(prompt_bound(r) for r in op.requests) or op.body_size, 0, False)
    prompt = u.prompt_tokens or est.prompt
    if error is not None and not outcome.cancelled and op.backend != "local" and est.output:
        return Usage(est.prompt, est.output, 0)
    return Usage(prompt, u.completion_tokens or outcome.pieces, u.cached_tokens)


def billed(usage: Usage, outcome: Outcome) -> Usage:
    """What the budgets pay for: a reply from the response cache costs its prompt at
    the cached-input price and nothing for its completion (no model ran)."""
    if outcome.cache is None:
        return usage
    return Usage(usage.prompt_tokens, 0, usage.prompt_tokens)


def utc_day(now: float) -> str:
    """``YYYY-MM-DD`` of ``now`` in UTC (each day's name is made once)."""
    return _day_name(int(now // 86_400))


@functools.lru_cache(maxsize=8)
def _day_name(day: int) -> str:
    return datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y-%m-%d")


def usage_record(
    ctx: RequestContext,
    op: Operation,
    outcome: Outcome,
    usage: Usage,
    cost: int,
    ticket: Ticket,
    book: QuotaBook,
) -> UsageRecord:
    p = ctx.principal
    now = time.time()
    user_id = p.user_id or (p.id if p.kind == "user" else None)
    error = outcome.error
    if error is not None:
        status, http = f"error:{error.status}:{error.code}", error.status
    elif outcome.cancelled:
        status, http = "cancelled", 499
    else:
        status, http = "ok", 200
    return UsageRecord(
        id=ticket.record_id,
        request_id=ctx.request_id,
        created_at=now,
        day=utc_day(now),
        principal=rules.caller(ctx),
        user_id=user_id,
        key_id=p.id if p.kind == "key" else None,
        client_id=p.id if p.kind == "client" else None,
        team=book.teams.get(user_id) if user_id else None,
        api=ctx.api,
        route=ctx.route,
        kind=op.kind,
        model=op.model,
        served=outcome.served or op.model,
        backend=op.backend,
        stream=op.stream,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_tokens=usage.cached_tokens,
        cost_micros=cost,
        status=status,
        http_status=http,
        latency_ms=round(outcome.latency_s * 1000, 3),
        ttft_ms=None if outcome.ttft_s is None else round(outcome.ttft_s * 1000, 3),
        cache=outcome.cache,
    )


# -- the answers -----------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m" + f"{rest:.3f}".rstrip("0").rstrip(".") + "s"


_NAMES = {"rpm:": "requests", "tpm:": "tokens"}


def headers(limits: list[Limit], decision: Decision) -> dict[str, str]:
    """OpenAI's x-ratelimit headers for the tightest request and token limits."""
    tightest: dict[str, int] = {}
    remaining = decision.remaining
    for i, limit in enumerate(limits):
        name = _NAMES.get(limit.key[:4])
        if name is not None:
            j = tightest.get(name)
            if j is None or remaining[i] < remaining[j]:
                tightest[name] = i
    out: dict[str, str] = {}
    for name, i in tightest.items():
        out[f"x-ratelimit-limit-{name}"] = str(limits[i].count)
        out[f"x-ratelimit-remaining-{name}"] = str(remaining[i])
        out[f"x-ratelimit-reset-{name}"] = _duration(decision.reset_s[i])
    return out


def refusal(limits: list[Limit], decision: Decision) -> RateLimited:
    """The 429 for a refused request; ``Retry-After`` rounded up, at most 120 s."""
    wait = min(decision.retry_after_s, MAX_RETRY_S)
    which = [
        lim for i, lim in enumerate(limits) if decision.remaining[i] < max(1, lim.cost)
    ] or limits
    what = ", ".join(rules.describe(lim) for lim in which)
    error = RateLimited(
        f"rate limit reached ({what}); retry after {math.ceil(wait * 10) / 10:.1f} s",
        retry_after=wait,
        headers={
            "retry-after-ms": str(max(1, math.ceil(wait * 1000))),
            **headers(limits, decision),
        },
    )
    error.reason = "concurrency" if all(lim.kind == "lease" for lim in which) else "rate_limit"
    return error
