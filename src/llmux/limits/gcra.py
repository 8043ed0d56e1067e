"""Rate limits by GCRA (the generic cell rate algorithm), exact and atomic.

A limit of ``count`` per ``period_s`` lets one unit through every ``interval =
period_s / count`` on average, with bursts of up to ``count``. Its whole state is one
number per key: the theoretical arrival time (TAT) of the next unit. A request of
``cost`` units moves it to ``max(TAT, now) + cost * interval``, and is admitted when that
is at most ``count * interval`` ahead of now. Otherwise it is refused, consumes
nothing, and may retry after exactly the excess.

Several limits (a key's, a user's, the global one) are checked and committed together:
all admit, or none is charged. On Redis this is one Lua script, one round trip, with
Redis's own clock (``TIME``), so replicas share counters and need no synchronised
clocks. :class:`MemoryLimiter` runs the same arithmetic in process, for one replica.
Times are integer microseconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

US = 1_000_000


@dataclass(frozen=True, slots=True)
class Limit:
    key: str  # e.g. "rpm:key:3f2a9c01b7de"
    count: int  # units per period
    period_s: float = 60.0
    cost: int = 1  # units this request takes

    @property
    def interval_us(self) -> int:
        return max(1, round(self.period_s * US / self.count))

    @property
    def capacity_us(self) -> int:
        return self.interval_us * self.count


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after_s: float  # 0 when allowed
    remaining: tuple[int, ...]  # per limit, after this request
    reset_s: tuple[float, ...]  # per limit: until it is full again


class Limiter(Protocol):
    async def acquire(self, limits: list[Limit]) -> Decision: ...

    async def aclose(self) -> None: ...


def _decide(limits: list[Limit], tats: list[int], now: int) -> tuple[Decision, list[int]]:
    """The arithmetic both limiters share: the decision and the new TATs."""
    new = []
    worst = 0
    for limit, tat in zip(limits, tats, strict=True):
        start = max(tat, now)
        moved = start + limit.cost * limit.interval_us
        worst = max(worst, moved - now - limit.capacity_us)
        new.append(moved)
    if worst > 0:
        remaining = tuple(
            max(0, (limit.capacity_us - (max(t, now) - now)) // limit.interval_us)
            for limit, t in zip(limits, tats, strict=True)
        )
        reset = tuple(max(0, max(t, now) - now) / US for t in tats)
        return Decision(False, worst / US, remaining, reset), tats
    remaining = tuple(
        max(0, (limit.capacity_us - (t - now)) // limit.interval_us)
        for limit, t in zip(limits, new, strict=True)
    )
    return Decision(True, 0.0, remaining, tuple((t - now) / US for t in new)), new


class MemoryLimiter:
    """The algorithm in process: exact for one replica (the event loop makes each
    decision atomic)."""

    def __init__(self) -> None:
        self._tats: dict[str, int] = {}

    async def acquire(self, limits: list[Limit]) -> Decision:
        now = time.time_ns() // 1000
        tats = [self._tats.get(limit.key, now) for limit in limits]
        decision, new = _decide(limits, tats, now)
        if decision.allowed:
            for limit, tat in zip(limits, new, strict=True):
                self._tats[limit.key] = tat
            if len(self._tats) > 100_000:  # forget the keys that are idle again
                self._tats = {k: v for k, v in self._tats.items() if v > now}
        return decision

    async def aclose(self) -> None:
        return None


# KEYS: one per limit. ARGV: per limit interval_us, capacity_us, cost. Returns
# {allowed, retry_after_us, remaining_1, reset_us_1, remaining_2, reset_us_2, ...}.
SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = #KEYS
local tats = {}
local new = {}
local worst = 0
for i = 1, n do
  local interval = tonumber(ARGV[(i - 1) * 3 + 1])
  local capacity = tonumber(ARGV[(i - 1) * 3 + 2])
  local cost = tonumber(ARGV[(i - 1) * 3 + 3])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  tats[i] = tat
  new[i] = tat + cost * interval
  local over = new[i] - now - capacity
  if over > worst then worst = over end
end
local out = {}
if worst > 0 then
  out[1] = 0
  out[2] = worst
  for i = 1, n do
    local interval = tonumber(ARGV[(i - 1) * 3 + 1])
    local capacity = tonumber(ARGV[(i - 1) * 3 + 2])
    out[#out + 1] = math.max(0, math.floor((capacity - (tats[i] - now)) / interval))
    out[#out + 1] = tats[i] - now
  end
  return out
end
out[1] = 1
out[2] = 0
for i = 1, n do
  local interval = tonumber(ARGV[(i - 1) * 3 + 1])
  local capacity = tonumber(ARGV[(i - 1) * 3 + 2])
  local ttl = math.ceil((new[i] - now) / 1000) + 1
  redis.call('SET', KEYS[i], string.format('%d', new[i]), 'PX', ttl)
  out[#out + 1] = math.max(0, math.floor((capacity - (new[i] - now)) / interval))
  out[#out + 1] = new[i] - now
end
return out
"""


class RedisLimiter:
    """The algorithm in Redis, shared by every replica: one script call per request."""

    def __init__(self, url: str, prefix: str = "llmux:") -> None:
        import redis.asyncio as aioredis

        self.prefix = prefix
        self._redis: Any = aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._script = self._redis.register_script(SCRIPT)

    async def acquire(self, limits: list[Limit]) -> Decision:
        keys = [self.prefix + limit.key for limit in limits]
        args: list[int] = []
        for limit in limits:
            args += [limit.interval_us, limit.capacity_us, limit.cost]
        raw = await self._script(keys=keys, args=args)
        values = [int(v) for v in raw]
        pairs = values[2:]
        remaining = tuple(pairs[0::2])
        reset = tuple(v / US for v in pairs[1::2])
        return Decision(bool(values[0]), values[1] / US, remaining, reset)

    async def aclose(self) -> None:
        await self._redis.aclose()
