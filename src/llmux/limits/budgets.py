"""Budgets: what a key, user, client or team may spend per day, month or in total, in
integer micro-units of ``[prices] currency``.

Before a request runs, its most expensive outcome (:func:`cost` of its prompt bound and
output cap) is **held** against every budget that covers its caller, all of them or none;
a budget that cannot cover it refuses with 402. After the request, the usage writer
(``usage.py``) commits the record to the SQL ledger first and then **settles**: the hold
is dropped and the real cost added to the counter. A settle is idempotent by request id.

Counters (:class:`BudgetCounters`) are the fast path: per budget and period, ``spent``
(what the ledger holds) and ``held`` (the holds of running requests). A hold lives
``[limits] lease_s`` and is renewed while its request runs, so a process that dies
cannot keep the money it held for longer than that. A cold counter is seeded from the
ledger with ``HSETNX``, so replicas starting together cannot add the ledger twice;
:meth:`BudgetCounters.reconcile` compares a counter with the ledger and sets it right
(compare-and-set, so a settle landing meanwhile is not lost).
"""

from __future__ import annotations

import calendar
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from llmux.config import PricesSettings
from llmux.limits.gcra import Scripts
from llmux.policies import Usage
from llmux.storage.usage import BudgetRow, Period

MICRO = 1_000_000


def window(period: Period, at: float | None = None) -> tuple[str, float, float]:
    """The period's key and [start, end) in epoch seconds, UTC."""
    now = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    if period == "day":
        start = datetime(now.year, now.month, now.day, tzinfo=UTC)
        return start.strftime("%Y-%m-%d"), start.timestamp(), start.timestamp() + 86_400
    if period == "month":
        start = datetime(now.year, now.month, 1, tzinfo=UTC)
        days = calendar.monthrange(now.year, now.month)[1]
        return start.strftime("%Y-%m"), start.timestamp(), start.timestamp() + days * 86_400
    return "total", 0.0, math.inf


def money(micros: int) -> str:
    """Micro-units as a decimal string: two places at least, six at most."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICRO)
    digits = f"{frac:06d}".rstrip("0").ljust(2, "0")
    return f"{sign}{whole}.{digits}"


def parse_money(text: str) -> int:
    """A decimal amount (``"12.5"``) as micro-units; a ValueError names what is wrong."""
    value = text.strip()
    whole, _, frac = value.partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()) or len(frac) > 6:
        raise ValueError(f"{text!r} is not an amount (digits, at most six decimals)")
    return int(whole) * MICRO + int(frac.ljust(6, "0") or 0)


@dataclass(frozen=True, slots=True)
class Price:
    """Micro-units per million tokens."""

    input: int = 0
    cached_input: int = 0
    output: int = 0

    @property
    def free(self) -> bool:
        return not (self.input or self.cached_input or self.output)


class PriceTable:
    def __init__(self, settings: PricesSettings) -> None:
        self.currency = settings.currency
        self._prices = {
            name.lower().removesuffix(":latest"): Price(
                round(p.input * MICRO),
                round((p.input if p.cached_input is None else p.cached_input) * MICRO),
                round(p.output * MICRO),
            )
            for name, p in settings.models.items()
        }

    def price(self, model: str) -> Price:
        return self._prices.get(model.lower().removesuffix(":latest"), Price())

    def cost(self, model: str, usage: Usage) -> int:
        """Micro-units for ``usage`` on ``model``, rounded up."""
        p = self.price(model)
        if p.free:
            return 0
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        total = (
            (usage.prompt_tokens - cached) * p.input
            + cached * p.cached_input
            + usage.completion_tokens * p.output
        )
        return -(-total // MICRO)

    def most(self, model: str, prompt: int, output: int) -> int:
        """The most a request can cost: every prompt token uncached, the whole cap."""
        return self.cost(model, Usage(prompt, output, 0))


@dataclass(frozen=True, slots=True)
class Hold:
    budget: BudgetRow
    key: str  # the counter's key: budget id and period
    amount: int
    limit: int


@dataclass(frozen=True, slots=True)
class Refusal:
    budget: BudgetRow
    available: int


Seeder = Callable[[BudgetRow], Awaitable[int]]


def counter_key(budget: BudgetRow, at: float | None = None) -> str:
    return f"budget:{budget.id}:{window(budget.period, at)[0]}"


class BudgetCounters(Protocol):
    async def hold(self, rid: str, holds: list[Hold], seed: Seeder) -> Refusal | None:
        """Hold every amount, or none: the first budget that cannot cover its amount."""
        ...

    async def settle(self, rid: str, charges: list[tuple[Hold, int]]) -> None:
        """Drop ``rid``'s holds and add the real costs (once per ``rid``)."""
        ...

    async def renew(self, rid: str, holds: list[Hold]) -> None:
        """Keep a running request's holds for another ``hold_s``."""
        ...

    async def state(self, key: str) -> tuple[int | None, int]:
        """(spent, held) of a counter; spent None while the counter is cold."""
        ...

    async def reconcile(self, key: str, ledger: int, seen: int | None) -> bool:
        """Set ``spent`` to ``ledger`` if it still is ``seen``; False if it moved."""
        ...

    async def aclose(self) -> None: ...


class MemoryBudgets:
    """The counters in process, for one replica."""

    def __init__(self, hold_s: float = 60.0) -> None:
        self.hold_s = hold_s
        self._spent: dict[str, int] = {}
        self._holds: dict[str, dict[str, tuple[int, float]]] = {}
        self._settled: dict[str, float] = {}

    def _held(self, key: str, now: float) -> int:
        holds = self._holds.setdefault(key, {})
        for rid, (_, expiry) in list(holds.items()):
            if expiry <= now:
                del holds[rid]
        return sum(amount for amount, _ in holds.values())

    async def hold(self, rid: str, holds: list[Hold], seed: Seeder) -> Refusal | None:
        for h in holds:
            if h.key not in self._spent:
                self._spent.setdefault(h.key, await seed(h.budget))
        now = time.monotonic()
        for h in holds:
            available = h.limit - self._spent[h.key] - self._held(h.key, now)
            if h.amount > available:
                return Refusal(h.budget, max(0, available))
        for h in holds:
            self._holds[h.key][rid] = (h.amount, now + self.hold_s)
        return None

    async def renew(self, rid: str, holds: list[Hold]) -> None:
        until = time.monotonic() + self.hold_s
        for h in holds:
            found = self._holds.get(h.key, {}).get(rid)
            if found is not None:
                self._holds[h.key][rid] = (found[0], until)

    async def settle(self, rid: str, charges: list[tuple[Hold, int]]) -> None:
        now = time.monotonic()
        if rid in self._settled:
            return
        if len(self._settled) > 100_000:
            self._settled = {k: v for k, v in self._settled.items() if v > now}
        self._settled[rid] = now + 86_400
        for h, cost in charges:
            self._holds.get(h.key, {}).pop(rid, None)
            if h.key in self._spent:
                self._spent[h.key] += cost

    async def state(self, key: str) -> tuple[int | None, int]:
        return self._spent.get(key), self._held(key, time.monotonic())

    async def reconcile(self, key: str, ledger: int, seen: int | None) -> bool:
        if self._spent.get(key) != seen:
            return False
        self._spent[key] = ledger
        return True

    async def aclose(self) -> None:
        return None


# KEYS: per budget its counter hash. ARGV: rid, hold_ms, then per budget amount, limit.
# A counter hash holds "spent", "held" and "h:<rid>" = amount; its sorted set "<key>:x"
# orders the holds by expiry. Returns {1} held, {-1, i} counter i is cold, or
# {0, i, available} budget i cannot cover its amount.
_NOW_AND_CLEAN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function clean(key)
  local dead = redis.call('ZRANGEBYSCORE', key .. ':x', '-inf', now)
  for _, old in ipairs(dead) do
    local amount = tonumber(redis.call('HGET', key, 'h:' .. old) or 0)
    redis.call('HINCRBY', key, 'held', -amount)
    redis.call('HDEL', key, 'h:' .. old)
  end
  if #dead > 0 then redis.call('ZREMRANGEBYSCORE', key .. ':x', '-inf', now) end
end
"""
HOLD = (
    _NOW_AND_CLEAN
    + """
local rid = ARGV[1]
local avail = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  if redis.call('HEXISTS', key, 'spent') == 0 then return {-1, i} end
  clean(key)
  local spent = tonumber(redis.call('HGET', key, 'spent'))
  local held = tonumber(redis.call('HGET', key, 'held') or 0)
  avail[i] = tonumber(ARGV[2 + i * 2]) - spent - held
  if tonumber(ARGV[1 + i * 2]) > avail[i] then return {0, i, math.max(0, avail[i])} end
end
for i = 1, #KEYS do
  local amount = tonumber(ARGV[1 + i * 2])
  redis.call('HSET', KEYS[i], 'h:' .. rid, amount)
  redis.call('HINCRBY', KEYS[i], 'held', amount)
  redis.call('ZADD', KEYS[i] .. ':x', now + tonumber(ARGV[2]), rid)
end
return {1}
"""
)

# KEYS[1]: the settled marker of rid; then per budget its counter hash. ARGV: rid, then
# per budget the real cost. A second settle of the same rid changes nothing.
SETTLE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', 86400) == false then return 0 end
local rid = ARGV[1]
for i = 2, #KEYS do
  local key = KEYS[i]
  local amount = redis.call('HGET', key, 'h:' .. rid)
  if amount then
    redis.call('HINCRBY', key, 'held', -tonumber(amount))
    redis.call('HDEL', key, 'h:' .. rid)
    redis.call('ZREM', key .. ':x', rid)
  end
  if redis.call('HEXISTS', key, 'spent') == 1 then
    redis.call('HINCRBY', key, 'spent', tonumber(ARGV[i]))
  end
end
return 1
"""

# KEYS: counter hashes; ARGV: rid, hold_ms. Only holds that still exist move.
RENEW = (
    _NOW_AND_CLEAN
    + """
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i] .. ':x', 'XX', now + tonumber(ARGV[2]), ARGV[1])
end
return 1
"""
)

# KEYS[1]: a counter hash, its expired holds dropped first. Returns {spent or -1, held}.
STATE = (
    _NOW_AND_CLEAN
    + """
clean(KEYS[1])
local spent = redis.call('HGET', KEYS[1], 'spent')
return {tonumber(spent or -1), tonumber(redis.call('HGET', KEYS[1], 'held') or 0)}
"""
)

# KEYS[1]: a counter hash. ARGV: the ledger's sum, the spent value reconcile read.
RECONCILE = """
local spent = redis.call('HGET', KEYS[1], 'spent')
if (spent or '') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'spent', ARGV[1])
return 1
"""


class RedisBudgets:
    """The counters in Redis, shared by every replica."""

    def __init__(self, scripts: Scripts, prefix: str = "llmux:", hold_s: float = 60.0) -> None:
        self.scripts = scripts
        self.redis = scripts.redis
        self.prefix = prefix
        self.hold_ms = max(1, round(hold_s * 1000))
        self._hold = scripts.register(HOLD)
        self._settle = scripts.register(SETTLE)
        self._renew = scripts.register(RENEW)
        self._state = scripts.register(STATE)
        self._reconcile = scripts.register(RECONCILE)

    async def hold(self, rid: str, holds: list[Hold], seed: Seeder) -> Refusal | None:
        keys = [self.prefix + h.key for h in holds]
        args: list[Any] = [rid, self.hold_ms]
        for h in holds:
            args += [h.amount, h.limit]
        for _ in range(len(holds) + 1):
            answer = [int(v) for v in await self.scripts.call(self._hold, keys, args)]
            if answer[0] == 1:
                return None
            h = holds[answer[1] - 1]
            if answer[0] == 0:
                return Refusal(h.budget, answer[2])
            await self._seed(h, await seed(h.budget))
        raise RuntimeError("budget counters could not be seeded")

    async def _seed(self, h: Hold, spent: int) -> None:
        key = self.prefix + h.key
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(key, "spent", spent)
            if h.budget.period != "total":
                end = window(h.budget.period)[2]
                pipe.expireat(key, int(end) + 7 * 86_400, nx=True)
                pipe.expireat(key + ":x", int(end) + 7 * 86_400, nx=True)
            await pipe.execute()

    async def settle(self, rid: str, charges: list[tuple[Hold, int]]) -> None:
        keys = [f"{self.prefix}settled:{rid}"] + [self.prefix + h.key for h, _ in charges]
        await self.scripts.call(self._settle, keys, [rid] + [cost for _, cost in charges])

    async def renew(self, rid: str, holds: list[Hold]) -> None:
        await self.scripts.call(
            self._renew, [self.prefix + h.key for h in holds], [rid, self.hold_ms]
        )

    async def state(self, key: str) -> tuple[int | None, int]:
        spent, held = (
            int(v) for v in await self.scripts.call(self._state, [self.prefix + key], [])
        )
        return (None if spent < 0 else spent), held

    async def reconcile(self, key: str, ledger: int, seen: int | None) -> bool:
        seen_text = "" if seen is None else str(seen)
        done = await self.scripts.call(self._reconcile, [self.prefix + key], [ledger, seen_text])
        return bool(int(done))

    async def aclose(self) -> None:
        return None  # the limiter owns the connection
