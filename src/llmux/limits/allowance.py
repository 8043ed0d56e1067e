"""A replica's allowance: chunks of a large limit taken from Redis and spent here.

Asking Redis about every request costs a round trip and the Redis client's own work,
and on a busy replica that is most of what limits cost. So a request that goes to Redis
for a limit far from full takes, beside its own cost, a chunk of ``[limits]
local_share`` of the limit (2 % by default), and the requests after it on this replica
spend the chunk here, without asking. What stays exact:

* Redis grants a chunk only while the limit stays at most half used with it (the
  script's ``extra``, ``gcra.py``). Nearer the limit every request asks Redis, exactly as
  with ``local_share = 0``.
* A chunk of a rate limit is spent within the time it adds to the limit's TAT (and
  within ``local_share_s``). Meanwhile the TAT stays ahead of the clock, and a unit
  spent here moves the limit just as if it had been charged in Redis at that moment:
  nothing is admitted that checking each request in Redis would refuse.
* A chunk of a concurrency limit is a set of real leases in Redis's set, counted by
  every replica; the unused ones are given back after ``local_share_s`` (less than half
  the lease time, so none lapses while this replica still counts on it).
* Token tallies are counted here and sent every :data:`SWEEP_S`; what is left of a chunk
  goes back to Redis when it expires and at shutdown.

The cost: while a chunk sits unused here, another replica can be refused up to one
chunk early, only on a limit that was under half used moments before. Limits smaller
than ``2 / local_share`` (100 requests per minute at 2 %) never take a chunk.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace

from llmux.limits.gcra import Decision, Limit, RedisLimiter

log = logging.getLogger(__name__)
SWEEP_S = 0.05  # tallies go out, and expired chunks go back, this often
MAX_SLOTS = 32  # a concurrency chunk is at most this many leases


@dataclass(slots=True)
class _Units:
    """What is left here of a rate limit's chunks."""

    limit: Limit
    units: int
    until: float  # monotonic: spend before this
    cap: int  # at most this many units stay here; more go back to Redis
    remaining: int  # the limit's remaining in Redis at the last grant
    reset_at: float  # monotonic: when the limit is full again, as Redis said then


@dataclass(slots=True)
class _Slots:
    """The free leases this replica holds of a concurrency limit."""

    limit: Limit
    free: list[str]
    until: float
    cap: int
    remaining: int


@dataclass(slots=True)
class _View:
    remaining: int
    reset_s: float


class Allowances:
    """A :class:`~llmux.limits.gcra.Limiter` over a :class:`RedisLimiter` that spends
    chunks of large limits in this process (see the module's text)."""

    def __init__(self, inner: RedisLimiter, share: float, hold_s: float, lease_s: float) -> None:
        self.inner = inner
        self.scripts = inner.scripts
        self.share = share
        self.hold_s = hold_s
        self.slots_s = min(hold_s, lease_s / 2)
        self._units: dict[str, _Units] = {}
        self._slots: dict[str, _Slots] = {}
        self._busy: dict[tuple[str, str], str] = {}  # (key, lease) -> the slot it runs on
        self._asking: set[str] = set()  # keys with a chunk on its way
        self._tally: dict[str, int] = {}  # not yet sent
        self._timer: asyncio.TimerHandle | None = None

    # -- admission -------------------------------------------------------------------------

    async def acquire(self, limits: list[Limit], lease: str = "") -> Decision:
        now = time.monotonic()
        views: dict[int, _View] = {}
        ask: list[Limit] = []
        asked: list[int] = []
        for i, limit in enumerate(limits):
            view = self._take(limit, lease, now)
            if view is not None:
                views[i] = view
            else:
                asked.append(i)
                ask.append(self._with_chunk(limit))
        if not ask:
            return _merged(limits, views, None, [])
        wanted = [limit.key for limit in ask if limit.extra]
        self._asking.update(wanted)
        call = asyncio.ensure_future(self.inner.acquire(ask, lease))
        try:
            decision = await asyncio.shield(call)
        except asyncio.CancelledError:  # gone meanwhile: keep what Redis grants, unused
            call.add_done_callback(lambda done: self._adopt(done, ask, lease, now))
            self._put_back(limits, views, lease)
            raise
        except BaseException:
            self._put_back(limits, views, lease)
            raise
        finally:
            self._asking.difference_update(wanted)
        if decision.allowed:
            self._keep(ask, decision, lease, now)
        else:
            self._put_back(limits, views, lease)
        return _merged(limits, views, decision, asked)

    def _take(self, limit: Limit, lease: str, now: float) -> _View | None:
        """Spend this limit's cost from the chunk here, if one covers it."""
        if limit.kind == "rate":
            held = self._units.get(limit.key)
            if held is None or held.until <= now or held.units < limit.cost:
                return None
            held.units -= limit.cost
            if limit.tally:
                self._count(limit.key, limit.cost)
            return _View(held.remaining + held.units, max(0.0, held.reset_at - now))
        slots = self._slots.get(limit.key)
        if slots is None or slots.until <= now or not slots.free:
            return None
        self._busy[(limit.key, lease)] = slots.free.pop()
        return _View(slots.remaining + len(slots.free), 0.0)

    def _with_chunk(self, limit: Limit) -> Limit:
        """The limit with a chunk to take beside the request's cost, where it is worth
        one and none is on its way already."""
        if limit.key in self._asking:
            return limit
        size = int(limit.count * self.share)
        if limit.kind == "lease":
            size = min(size, MAX_SLOTS)
            return replace(limit, extra=size) if size >= 1 else limit
        return replace(limit, extra=size) if size >= max(2, limit.cost) else limit

    def _keep(self, ask: list[Limit], decision: Decision, lease: str, sent: float) -> None:
        """Put the chunks Redis granted here. A rate chunk lives while the TAT it moved
        stays ahead of the clock, measured from before the call went out."""
        for limit, extra, remaining, reset_s in zip(
            ask, decision.granted, decision.remaining, decision.reset_s, strict=True
        ):
            if extra <= 0:
                continue
            if limit.kind == "rate":
                held = self._units.get(limit.key)
                units = extra + (held.units if held is not None else 0)
                if units > 2 * extra:  # more than a chunk's room: the rest back to Redis
                    self.inner.settle_later([(replace(limit, tally=False), 2 * extra - units)])
                    units = 2 * extra
                self._units[limit.key] = _Units(
                    limit, units, sent + min(self.hold_s, reset_s), 2 * extra,
                    remaining, sent + reset_s,
                )  # fmt: skip
            else:
                made = [f"{lease}+{j}" for j in range(1, extra + 1)]
                slots = self._slots.get(limit.key)
                if slots is None:
                    self._slots[limit.key] = _Slots(
                        limit, made, sent + self.slots_s, 2 * extra, remaining
                    )
                else:
                    slots.free.extend(made)
                    slots.until, slots.cap, slots.remaining = (
                        sent + self.slots_s,
                        2 * extra,
                        remaining,
                    )
        self._schedule()

    def _adopt(
        self, done: asyncio.Future[Decision], ask: list[Limit], lease: str, sent: float
    ) -> None:
        """A request cancelled while Redis admitted it: keep the chunks, and give back
        (here or to Redis) what it took for itself."""
        if done.cancelled() or done.exception() is not None:
            return
        decision = done.result()
        if not decision.allowed:
            return
        self._keep(ask, decision, lease, sent)
        for limit in ask:
            if limit.kind == "rate":
                if limit.tally:
                    self._count(limit.key, -limit.cost)
                self._refund(limit, limit.cost)
            else:
                self._free(limit, lease)

    def _put_back(self, limits: list[Limit], views: dict[int, _View], lease: str) -> None:
        """Undo what :meth:`_take` spent, for a request refused or gone."""
        for i in views:
            limit = limits[i]
            if limit.kind == "rate":
                if limit.tally:
                    self._count(limit.key, -limit.cost)
                self._refund(limit, limit.cost)
            else:
                self._free(limit, self._busy.pop((limit.key, lease)))

    # -- after the request -----------------------------------------------------------------

    async def settle(self, changes: list[tuple[Limit, int]], lease: str = "") -> None:
        self.settle_later(changes, lease)

    def settle_later(self, changes: list[tuple[Limit, int]], lease: str = "") -> None:
        for limit, units in changes:
            if limit.kind == "lease":
                self._free(limit, self._busy.pop((limit.key, lease), lease))
                continue
            if limit.tally and units:
                self._count(limit.key, units)
            if units < 0:
                self._refund(limit, -units)
            elif units > 0:
                held = self._units.get(limit.key)
                if held is not None and held.until > time.monotonic() and held.units >= units:
                    held.units -= units
                else:
                    self.inner.settle_later([(replace(limit, tally=False), units)])

    def _refund(self, limit: Limit, units: int) -> None:
        """Units charged in Redis and not used: into the chunk here while it lives and
        has room, else back to Redis."""
        held = self._units.get(limit.key)
        if held is not None and held.until > time.monotonic():
            kept = min(units, max(0, held.cap - held.units))
            held.units += kept
            units -= kept
        if units:
            self.inner.settle_later([(replace(limit, tally=False), -units)])

    def _free(self, limit: Limit, slot: str) -> None:
        """A lease no request runs on any more: a free slot here, or given back."""
        slots = self._slots.get(limit.key)
        if slots is not None and slots.until > time.monotonic() and len(slots.free) < slots.cap:
            slots.free.append(slot)
        else:
            self.inner.settle_later([(limit, 0)], slot)

    async def renew(self, leases: list[tuple[Limit, str]]) -> None:
        await self.inner.renew(
            [(limit, self._busy.get((limit.key, lease), lease)) for limit, lease in leases]
        )

    async def charged(self, key: str) -> int:
        return await self.inner.charged(key) + self._tally.get(key, 0)

    # -- sending -----------------------------------------------------------------------------

    def _count(self, key: str, units: int) -> None:
        self._tally[key] = self._tally.get(key, 0) + units
        self._schedule()

    def _schedule(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(SWEEP_S, self._sweep)

    def _sweep(self, everything: bool = False) -> None:
        """Send the tallies; give back the chunks that expired."""
        self._timer = None
        now = float("inf") if everything else time.monotonic()
        if self._tally:
            tally, self._tally = self._tally, {}
            self.inner.tally_later({k: v for k, v in tally.items() if v})
        for key, held in list(self._units.items()):
            if held.until <= now:
                del self._units[key]
                if held.units:
                    self.inner.settle_later([(replace(held.limit, tally=False), -held.units)])
        for key, slots in list(self._slots.items()):
            if slots.until <= now:
                del self._slots[key]
                for slot in slots.free:
                    self.inner.settle_later([(slots.limit, 0)], slot)
        if self._units or self._slots:
            self._schedule()

    async def aclose(self) -> None:
        """Give everything back; the Redis limiter sends it before it closes."""
        if self._timer is not None:
            self._timer.cancel()
        self._sweep(everything=True)
        await self.inner.aclose()


def _merged(
    limits: list[Limit], views: dict[int, _View], decision: Decision | None, asked: list[int]
) -> Decision:
    """One decision for the request: Redis's for the limits it was asked about, this
    replica's view for the ones spent here."""
    remaining = [0] * len(limits)
    reset = [0.0] * len(limits)
    for i, view in views.items():
        remaining[i], reset[i] = view.remaining, view.reset_s
    if decision is None:
        return Decision(True, 0.0, tuple(remaining), tuple(reset))
    for j, i in enumerate(asked):  # a chunk granted is this replica's to spend still
        granted = decision.granted[j] if decision.granted else 0
        remaining[i], reset[i] = decision.remaining[j] + granted, decision.reset_s[j]
    return Decision(decision.allowed, decision.retry_after_s, tuple(remaining), tuple(reset))
