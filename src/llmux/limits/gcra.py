"""Rate and concurrency limits, exact and atomic, on Redis or in process.

**Rates by GCRA** (the generic cell rate algorithm). A limit of ``count`` per
``period_s`` lets one unit through every ``interval = period_s / count`` on average,
with bursts of up to ``count``. Its whole state is one number per key: the theoretical
arrival time (TAT) of the next unit. A request of ``cost`` units moves it to
``max(TAT, now) + cost * interval`` and is admitted when that is at most
``count * interval`` ahead of now; otherwise it is refused, consumes nothing, and may
retry after exactly the excess. Units are requests or tokens: a token limit is charged
the request's reservation at admission, and :meth:`Limiter.settle` moves the TAT by
the difference once the real count is known (back for a refund, on for a charge).

**Concurrency by leases.** A concurrency limit of ``count`` is a sorted set of lease ids
scored by their expiry; admission first drops expired leases, so a process that dies
cannot keep its slots past ``period_s`` (the lease time), and a running request renews
its lease (:meth:`Limiter.renew`).

All of a request's limits are checked and committed together: every one admits it, or
none is charged. On Redis that is one Lua script, one round trip, with Redis's own clock
(``TIME``), so replicas share counters and need no synchronised clocks.
:class:`MemoryLimiter` runs the same arithmetic in process, for one replica. A limit
with ``tally`` also adds what it charges to a running total (``<key>:charged``), which
the usage checks compare with the usage records. Times are integer microseconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

try:
    from redis.exceptions import RedisError
except ImportError:  # the redis extra is not installed: no Redis errors can happen

    class RedisError(Exception):  # type: ignore[no-redef]
        pass


log = logging.getLogger(__name__)
UNREACHABLE: tuple[type[BaseException], ...] = (OSError, ConnectionError, RedisError)
US = 1_000_000
TALLY_TTL_MS = 2 * 86_400_000  # a tally lives two days past its last change
LEASE_RETRY_S = 1.0  # a full concurrency limit: when a slot frees is unknown
SETTLE_DELAY_S = 0.02  # a settle rides with the next admission, or goes after this


@dataclass(frozen=True, slots=True)
class Limit:
    key: str  # e.g. "rpm:key:3f2a9c01b7de"
    count: int  # units per period; for a lease limit, requests at once
    period_s: float = 60.0  # for a lease limit: how long a lease lives unrenewed
    cost: int = 1  # units this request takes (a lease takes one)
    kind: Literal["rate", "lease"] = "rate"
    tally: bool = False
    # units (or lease slots) to take beyond ``cost`` for a replica's allowance
    # (``allowance.py``); granted only while the limit stays at most half used
    extra: int = 0

    @property
    def interval_us(self) -> int:
        return max(1, round(self.period_s * US / self.count))

    @property
    def capacity_us(self) -> int:
        return self.interval_us * self.count

    @property
    def lease_us(self) -> int:
        return max(1, round(self.period_s * US))

    def args(self) -> str:
        """The script's arguments for this limit: kind, interval or lease time,
        capacity or count, cost, tally, extra."""
        if self.kind == "lease":
            return f"1 {self.lease_us} {self.count} 1 0 {self.extra}"
        return f"0 {self.interval_us} {self.capacity_us} {self.cost} {int(self.tally)} {self.extra}"


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after_s: float  # 0 when allowed
    remaining: tuple[int, ...]  # per limit, after this request
    reset_s: tuple[float, ...]  # per limit: until it is full again
    granted: tuple[int, ...] = ()  # per limit: the extra units or slots taken (Redis only)


class Limiter(Protocol):
    async def acquire(self, limits: list[Limit], lease: str = "") -> Decision:
        """Check and charge every limit, or none; ``lease`` names this request's lease
        in the concurrency limits."""
        ...

    async def settle(self, changes: list[tuple[Limit, int]], lease: str = "") -> None:
        """After the request: move each rate limit by its signed unit count (a refund is
        negative) and give back the lease in each lease limit listed, with the count of
        extra slots it took (``<lease>+1``..; 0 for none)."""
        ...

    def settle_later(self, changes: list[tuple[Limit, int]], lease: str = "") -> None:
        """:meth:`settle` without waiting: on its way when this returns; a failure is
        logged."""
        ...

    async def renew(self, leases: list[tuple[Limit, str]]) -> None:
        """Push the expiry of running requests' leases ``period_s`` into the future."""
        ...

    async def charged(self, key: str) -> int:
        """The running total a tally limit has charged under ``key``."""
        ...

    async def aclose(self) -> None: ...


class MemoryLimiter:
    """The algorithm in process: exact for one replica (the event loop makes each
    decision atomic)."""

    def __init__(self) -> None:
        self._tats: dict[str, int] = {}
        self._leases: dict[str, dict[str, int]] = {}
        self._tally: dict[str, int] = {}

    async def acquire(self, limits: list[Limit], lease: str = "") -> Decision:
        now = time.time_ns() // 1000
        worst = 0
        new: list[int] = []
        held: list[int] = []
        for limit in limits:
            if limit.kind == "lease":
                leases = self._live(limit.key, now, limit.count)
                held.append(len(leases))
                new.append(0)
                if len(leases) + 1 > limit.count:
                    worst = max(worst, round(LEASE_RETRY_S * US))
                continue
            tat = max(self._tats.get(limit.key, now), now)
            held.append(tat)
            new.append(tat + limit.cost * limit.interval_us)
            worst = max(worst, new[-1] - now - limit.capacity_us)
        if worst > 0:
            return _decision(limits, held, now, False, worst)
        for limit, tat in zip(limits, new, strict=True):
            if limit.kind == "lease":
                self._leases.setdefault(limit.key, {})[lease] = now + limit.lease_us
            else:
                self._tats[limit.key] = tat
                if limit.tally:
                    self._tally[limit.key] = self._tally.get(limit.key, 0) + limit.cost
        if len(self._tats) > 100_000:  # forget the keys that are idle again
            self._tats = {k: v for k, v in self._tats.items() if v > now}
        after = [held[i] + 1 if limit.kind == "lease" else new[i] for i, limit in enumerate(limits)]
        return _decision(limits, after, now, True, 0)

    def _live(self, key: str, now: int, count: int) -> dict[str, int]:
        """The key's leases. Expired ones (never given back) are dropped only when they
        could matter, on a full limit: a scan per call would cost O(running requests)."""
        leases = self._leases.setdefault(key, {})
        if len(leases) >= count:
            for lease, expiry in list(leases.items()):
                if expiry <= now:
                    del leases[lease]
        return leases

    async def settle(self, changes: list[tuple[Limit, int]], lease: str = "") -> None:
        self.settle_later(changes, lease)

    def settle_later(self, changes: list[tuple[Limit, int]], lease: str = "") -> None:
        now = time.time_ns() // 1000
        for limit, units in changes:
            if limit.kind == "lease":
                self._leases.get(limit.key, {}).pop(lease, None)
                continue
            if limit.tally:
                self._tally[limit.key] = self._tally.get(limit.key, 0) + units
            tat = self._tats.get(limit.key)
            if tat is None or units == 0:
                continue
            moved = (max(tat, now) if units > 0 else tat) + units * limit.interval_us
            if moved > now:
                self._tats[limit.key] = moved
            else:
                del self._tats[limit.key]

    async def renew(self, leases: list[tuple[Limit, str]]) -> None:
        now = time.time_ns() // 1000
        for limit, lease in leases:
            held = self._leases.get(limit.key, {})
            if lease in held:
                held[lease] = now + limit.lease_us

    async def charged(self, key: str) -> int:
        return self._tally.get(key, 0)

    async def aclose(self) -> None:
        return None


def _decision(
    limits: list[Limit], state: list[int], now: int, allowed: bool, worst: int
) -> Decision:
    """Remaining units and time to full, per limit, from each one's TAT (or, for a
    lease limit, its number of live leases)."""
    remaining = []
    reset = []
    for limit, value in zip(limits, state, strict=True):
        if limit.kind == "lease":
            remaining.append(max(0, limit.count - value))
            reset.append(0.0)
        else:
            ahead = max(0, value - now)
            remaining.append(max(0, (limit.capacity_us - ahead) // limit.interval_us))
            reset.append(ahead / US)
    return Decision(allowed, worst / US, tuple(remaining), tuple(reset))


# KEYS: one per limit. ARGV[1]: the lease id; ARGV[2]: per limit six numbers, kind
# (0 rate, 1 lease), interval_us or lease_us, capacity_us or count, cost, tally, extra,
# in one space-separated string (one argument to encode, not thirty). The extra units
# (slots ``<lease>+1``.. for a lease limit) are taken too when the limit stays at most
# half used with them; they are not tallied. Returns {allowed, retry_after_us, then per
# limit: remaining, reset_us, extra granted}.
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = #KEYS
local lease = ARGV[1]
local state = {}
local new = {}
local worst = 0
local spec = {}
for number in string.gmatch(ARGV[2], '-?%d+') do spec[#spec + 1] = tonumber(number) end
local function arg(i, j) return spec[(i - 1) * 6 + j] end
local granted = {}
for i = 1, n do
  granted[i] = 0
  if arg(i, 1) == 1 then
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
    state[i] = redis.call('ZCARD', KEYS[i])
    if state[i] + 1 > arg(i, 3) then worst = math.max(worst, LEASE_RETRY) end
  else
    local tat = tonumber(redis.call('GET', KEYS[i]) or now)
    if tat < now then tat = now end
    state[i] = tat
    new[i] = tat + arg(i, 4) * arg(i, 2)
    local over = new[i] - now - arg(i, 3)
    if over > worst then worst = over end
  end
end
local out = {0, worst}
if worst <= 0 then
  out[1] = 1
  for i = 1, n do
    local extra = arg(i, 6)
    if arg(i, 1) == 1 then
      local expiry = now + arg(i, 2)
      local members = {expiry, lease}
      if extra > 0 and (state[i] + 1 + extra) * 2 <= arg(i, 3) then
        for j = 1, extra do
          members[#members + 1] = expiry
          members[#members + 1] = lease .. '+' .. j
        end
        granted[i] = extra
      end
      redis.call('ZADD', KEYS[i], unpack(members))
      redis.call('PEXPIRE', KEYS[i], math.ceil(arg(i, 2) / 1000) + 1000)
      state[i] = state[i] + 1 + granted[i]
    else
      if extra > 0 and (new[i] + extra * arg(i, 2) - now) * 2 <= arg(i, 3) then
        new[i] = new[i] + extra * arg(i, 2)
        granted[i] = extra
      end
      local ttl = math.ceil((new[i] - now) / 1000) + 1
      redis.call('SET', KEYS[i], string.format('%d', new[i]), 'PX', ttl)
      state[i] = new[i]
      if arg(i, 5) == 1 then
        redis.call('INCRBY', KEYS[i] .. ':charged', arg(i, 4))
        redis.call('PEXPIRE', KEYS[i] .. ':charged', TALLY_TTL)
      end
    end
  end
end
for i = 1, n do
  if arg(i, 1) == 1 then
    out[#out + 1] = math.max(0, arg(i, 3) - state[i])
    out[#out + 1] = 0
  else
    local ahead = math.max(0, state[i] - now)
    out[#out + 1] = math.max(0, math.floor((arg(i, 3) - ahead) / arg(i, 2)))
    out[#out + 1] = ahead
  end
  out[#out + 1] = granted[i]
end
return out
""".replace("LEASE_RETRY", str(round(LEASE_RETRY_S * US))).replace("TALLY_TTL", str(TALLY_TTL_MS))

# KEYS: one per change. ARGV[1]: the lease id; ARGV[2]: per change kind, interval_us,
# units (signed), tally, in one string. A rate limit's TAT moves by units * interval (a
# TAT that falls behind now is deleted: the limit is full again); a lease limit drops
# the lease (and, with units n, its extra slots <lease>+1..n); kind 2 only adds units
# to the tally.
SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local spec = {}
for number in string.gmatch(ARGV[2], '-?%d+') do spec[#spec + 1] = tonumber(number) end
local function arg(i, j) return spec[(i - 1) * 4 + j] end
for i = 1, #KEYS do
  if arg(i, 1) == 1 then
    redis.call('ZREM', KEYS[i], ARGV[1])
    for j = 1, arg(i, 3) do redis.call('ZREM', KEYS[i], ARGV[1] .. '+' .. j) end
  elseif arg(i, 1) == 2 then
    redis.call('INCRBY', KEYS[i] .. ':charged', arg(i, 3))
    redis.call('PEXPIRE', KEYS[i] .. ':charged', TALLY_TTL)
  else
    local units = arg(i, 3)
    if arg(i, 4) == 1 and units ~= 0 then
      redis.call('INCRBY', KEYS[i] .. ':charged', units)
      redis.call('PEXPIRE', KEYS[i] .. ':charged', TALLY_TTL)
    end
    local tat = tonumber(redis.call('GET', KEYS[i]))
    if tat and units ~= 0 then
      if units > 0 and tat < now then tat = now end
      local moved = tat + units * arg(i, 2)
      if moved > now then
        redis.call('SET', KEYS[i], string.format('%d', moved), 'PX',
          math.ceil((moved - now) / 1000) + 1)
      else
        redis.call('DEL', KEYS[i])
      end
    end
  end
end
return 1
""".replace("TALLY_TTL", str(TALLY_TTL_MS))

# KEYS: lease limits; ARGV: per key the lease id and lease_us. Only live leases move.
RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i = 1, #KEYS do
  local ttl = tonumber(ARGV[i * 2])
  redis.call('ZADD', KEYS[i], 'XX', now + ttl, ARGV[i * 2 - 1])
  redis.call('PEXPIRE', KEYS[i], math.ceil(ttl / 1000) + 1000)
end
return 1
"""


Call = tuple[Any, list[Any], list[Any], "asyncio.Future[Any]"]


class Scripts:
    """Lua script calls on one Redis, coalesced: the calls made while the event loop
    runs one turn go out together as one pipeline (one write, one round trip), so many
    concurrent requests cost one exchange with Redis, not one each. A ``lazy`` call (a
    settle, which nothing waits for) rides with the next batch, or goes after
    :data:`SETTLE_DELAY_S`. A script Redis does not know (it restarted, or was flushed)
    is loaded and the call sent again."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._pending: list[Call] = []
        self._lazy: list[Call] = []
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    def register(self, text: str) -> Any:
        return self.redis.register_script(text)

    def call(
        self, script: Any, keys: list[Any], args: list[Any], *, lazy: bool = False
    ) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if lazy:
            self._lazy.append((script, keys, args, future))
            if self._timer is None:
                self._timer = loop.call_later(SETTLE_DELAY_S, self._flush)
            return future
        self._pending.append((script, keys, args, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._scheduled = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch = self._lazy + self._pending  # settles first: their refunds count already
        self._lazy, self._pending = [], []
        if batch:
            task = asyncio.ensure_future(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[Call]) -> None:
        from redis.exceptions import NoScriptError

        try:
            if len(batch) == 1:  # alone: a plain command costs less than a pipeline
                script, keys, args, _ = batch[0]
                try:
                    results = [await self.redis.evalsha(script.sha, len(keys), *keys, *args)]
                except NoScriptError as missing:
                    results = [missing]
            else:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for script, keys, args, _ in batch:
                        pipe.evalsha(script.sha, len(keys), *keys, *args)
                    results = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # noqa: BLE001 - the connection: every call of it fails
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (script, keys, args, future), result in zip(batch, results, strict=True):
            if isinstance(result, NoScriptError):
                try:
                    result = await script(keys=keys, args=args)  # loads it, then calls
                except Exception as exc:  # noqa: BLE001 - handed to the caller
                    result = exc
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def aclose(self) -> None:
        if self._lazy or self._pending:
            self._flush()
        if self._sending:
            await asyncio.gather(*list(self._sending), return_exceptions=True)


class RedisLimiter:
    """The algorithm in Redis, shared by every replica: one script call per request,
    coalesced with the other calls of the same moment (:class:`Scripts`)."""

    def __init__(self, url: str, prefix: str = "llmux:", connections: int = 64) -> None:
        import redis.asyncio as aioredis

        self.prefix = prefix
        # at most ``connections`` at once; past that a call waits (2 s at most) for one
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=connections, timeout=2, socket_timeout=2, socket_connect_timeout=2
        )
        self.redis: Any = aioredis.Redis(connection_pool=pool)
        self.scripts = Scripts(self.redis)
        self._acquire = self.scripts.register(ACQUIRE)
        self._settle = self.scripts.register(SETTLE)
        self._renew = self.scripts.register(RENEW)

    async def acquire(self, limits: list[Limit], lease: str = "") -> Decision:
        keys = [self.prefix + limit.key for limit in limits]
        spec = " ".join(limit.args() for limit in limits)
        pending = self.scripts.call(self._acquire, keys, [lease, spec])
        try:
            raw = await asyncio.shield(pending)
        except asyncio.CancelledError:  # gone before Redis answered: undo an admission
            pending.add_done_callback(lambda done: self._undo(done, limits, lease))
            raise
        return _parsed(raw)

    def _undo(self, done: asyncio.Future[Any], limits: list[Limit], lease: str) -> None:
        if done.cancelled() or done.exception() is not None or not _parsed(done.result()).allowed:
            return
        granted = _parsed(done.result()).granted
        changes: list[tuple[Limit, int]] = []
        for lim, n in zip(limits, granted, strict=True):
            if lim.kind == "lease":
                changes.append((lim, n))  # the lease and its extra slots
            else:
                changes.append((lim, -lim.cost))
                if n:  # extra units were not tallied
                    changes.append((replace(lim, tally=False), -n))
        self.scripts.call(self._settle, *self._settle_args(changes, lease), lazy=True)

    def _settle_args(
        self, changes: list[tuple[Limit, int]], lease: str
    ) -> tuple[list[Any], list[Any]]:
        keys = [self.prefix + limit.key for limit, _ in changes]
        spec = " ".join(
            f"{1 if limit.kind == 'lease' else 0} {limit.interval_us} {units} {int(limit.tally)}"
            for limit, units in changes
        )
        return keys, [lease, spec]

    async def settle(self, changes: list[tuple[Limit, int]], lease: str = "") -> None:
        """Sent with the next batch of calls, or within :data:`SETTLE_DELAY_S`."""
        if changes:
            keys, args = self._settle_args(changes, lease)
            await self.scripts.call(self._settle, keys, args, lazy=True)

    def settle_later(self, changes: list[tuple[Limit, int]], lease: str = "") -> None:
        if changes:
            keys, args = self._settle_args(changes, lease)
            self.scripts.call(self._settle, keys, args, lazy=True).add_done_callback(_logged)

    def tally_later(self, counts: dict[str, int]) -> None:
        """Add to tally limits' running totals (units counted elsewhere, e.g. spent
        from a replica's allowance), with the next batch of calls."""
        if counts:
            keys = [self.prefix + key for key in counts]
            spec = " ".join(f"2 0 {units} 1" for units in counts.values())
            self.scripts.call(self._settle, keys, ["", spec], lazy=True).add_done_callback(_logged)

    async def renew(self, leases: list[tuple[Limit, str]]) -> None:
        if not leases:
            return
        args: list[Any] = []
        for limit, lease in leases:
            args += [lease, limit.lease_us]
        keys = [self.prefix + limit.key for limit, _ in leases]
        await self.scripts.call(self._renew, keys, args)

    async def charged(self, key: str) -> int:
        return int(await self.redis.get(self.prefix + key + ":charged") or 0)

    async def aclose(self) -> None:
        await self.scripts.aclose()
        await self.redis.aclose()


def _logged(done: asyncio.Future[Any]) -> None:
    """A settle nobody waits for: its failure is logged (Redis gone: its units are lost,
    and a lease lapses by itself)."""
    if not done.cancelled() and (exc := done.exception()) is not None:
        log.warning("could not settle limits in Redis: %s", exc)


def _parsed(raw: Any) -> Decision:
    values = [int(v) for v in raw]
    each = values[2:]
    return Decision(
        bool(values[0]),
        values[1] / US,
        tuple(each[0::3]),
        tuple(v / US for v in each[1::3]),
        tuple(each[2::3]),
    )
