"""A replica's allowance on the real Redis: a large limit lends a chunk that the next
requests spend without asking Redis, the chunk goes back when it expires, none is lent
near the limit, concurrency chunks are real leases that other replicas count, tallies
arrive, and four processes spending chunks of one limit never admit more than checking
every request in Redis would."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from llmux.limits.allowance import SWEEP_S, Allowances
from llmux.limits.gcra import Limit, RedisLimiter
from tests.limits.hammer import four_processes

pytestmark = pytest.mark.anyio
HOLD_S = 0.4


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[Any]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def eventually(read: Callable[[], Awaitable[Any]], want: Any) -> None:
    """Wait (5 s at most) until ``read()`` gives ``want``: what goes back to Redis goes
    within a sweep or two of the chunk's expiry, later on a loaded machine."""
    deadline = time.monotonic() + 5
    while (got := await read()) != want:
        assert time.monotonic() < deadline, (got, want)
        await asyncio.sleep(SWEEP_S / 2)


def replica(redis_url: str, prefix: str, share: float = 0.02) -> Allowances:
    return Allowances(RedisLimiter(redis_url, prefix=prefix), share, HOLD_S, lease_s=30.0)


async def test_a_chunk_is_spent_here_and_given_back(redis_url: str, prefix: str, raw: Any) -> None:
    limiter = replica(redis_url, prefix)
    rpm = Limit("rpm:big", count=1000, period_s=60.0)  # one unit is 60 ms; a chunk is 20
    first = await limiter.acquire([rpm])
    assert first.allowed and first.remaining == (999,)  # the chunk still counts as free
    tat = int(await raw.get(prefix + "rpm:big"))
    for n in range(20):  # spent here: Redis is not asked, its TAT does not move
        d = await limiter.acquire([rpm])
        assert d.allowed and d.remaining == (998 - n,)
    assert int(await raw.get(prefix + "rpm:big")) == tat
    after = await limiter.acquire([rpm])  # the chunk is spent: Redis again, a new chunk
    assert after.allowed and int(await raw.get(prefix + "rpm:big")) == tat + 21 * 60_000
    await asyncio.sleep(HOLD_S)  # the 20 unspent units go back
    await eventually(lambda: raw.get(prefix + "rpm:big"), str(tat + 60_000).encode())
    await limiter.aclose()


async def test_no_chunk_near_the_limit(redis_url: str, prefix: str, raw: Any) -> None:
    limiter = replica(redis_url, prefix)
    rpm = Limit("rpm:half", count=200, period_s=60.0)  # a chunk is 4 units of 300 ms
    other = RedisLimiter(redis_url, prefix=prefix)  # another replica, per request
    assert (await other.acquire([Limit("rpm:half", 200, 60.0, cost=97)])).allowed
    lent = await limiter.acquire([rpm])  # 98 + 4 > 100: over half used with the chunk
    assert lent.allowed and lent.remaining == (102,)
    tat = int(await raw.get(prefix + "rpm:half"))
    d = await limiter.acquire([rpm])
    assert d.allowed and int(await raw.get(prefix + "rpm:half")) == tat + 300_000  # asked
    await limiter.aclose()
    await other.aclose()


async def test_the_last_units_are_never_lent(redis_url: str, prefix: str) -> None:
    """Every unit of the limit is admitted once, across two replicas, and no more."""
    a, b = replica(redis_url, prefix), replica(redis_url, prefix)
    rpm = Limit("rpm:all", count=500, period_s=600.0)
    admitted = 0
    for i in range(700):
        if (await (a if i % 3 else b).acquire([rpm])).allowed:
            admitted += 1
    # the chunks parked on each replica are at most 10 units each
    assert 500 - 2 * 10 <= admitted <= 500, admitted
    await a.aclose()
    await b.aclose()


async def test_concurrency_chunks_are_leases_other_replicas_count(
    redis_url: str, prefix: str, raw: Any
) -> None:
    a, b = replica(redis_url, prefix, share=0.1), replica(redis_url, prefix, share=0.1)
    conc = Limit("conc:big", count=40, period_s=30.0, kind="lease")  # a chunk is 4 slots
    assert (await a.acquire([conc], "r1")).allowed
    assert await raw.zcard(prefix + "conc:big") == 5  # its own lease and 4 lent
    for n in range(4):
        assert (await a.acquire([conc], f"r{n + 2}")).allowed
    assert await raw.zcard(prefix + "conc:big") == 5  # spent here
    running = ["r1", "r2", "r3", "r4", "r5"]
    admitted_b = []
    for n in range(40):
        if (await b.acquire([conc], f"b{n}")).allowed:
            admitted_b.append(f"b{n}")
    assert len(running) + len(admitted_b) <= 40  # never more at once than the limit
    assert len(admitted_b) >= 40 - 5 - 4  # at most one chunk parked on b
    for lease in running:
        await a.settle([(conc, 0)], lease)
    for lease in admitted_b:
        await b.settle([(conc, 0)], lease)
    await asyncio.sleep(HOLD_S)  # the free slots go back
    await eventually(lambda: raw.zcard(prefix + "conc:big"), 0)
    await a.aclose()
    await b.aclose()


async def test_a_running_request_on_a_lent_slot_is_renewed(
    redis_url: str, prefix: str, raw: Any
) -> None:
    limiter = replica(redis_url, prefix, share=0.25)
    conc = Limit("conc:renew", count=20, period_s=1.0, kind="lease")
    assert (await limiter.acquire([conc], "first")).allowed
    assert (await limiter.acquire([conc], "second")).allowed  # on a lent slot
    before = dict(await raw.zrange(prefix + "conc:renew", 0, -1, withscores=True))
    await asyncio.sleep(0.05)
    await limiter.renew([(conc, "second")])
    after = dict(await raw.zrange(prefix + "conc:renew", 0, -1, withscores=True))
    moved = [m for m in after if after[m] > before[m]]
    assert moved and all(m.startswith(b"first+") for m in moved), moved
    await limiter.aclose()


async def test_tallies_arrive_and_unspent_tokens_go_back(
    redis_url: str, prefix: str, raw: Any
) -> None:
    async def redis_now() -> int:
        seconds, micros = await raw.time()
        return int(seconds) * 1_000_000 + int(micros)

    limiter = replica(redis_url, prefix)
    began = await redis_now()
    spent = 0
    for used in (30, 10, 50, 0, 40):  # a unit is 6 ms: 130 of them stay ahead of the clock
        tpm = Limit("tpm:t", count=100_000, period_s=600.0, cost=100, tally=True)
        assert (await limiter.acquire([tpm])).allowed
        await limiter.settle([(tpm, used - 100)])
        spent += used
    ended = await redis_now()
    assert await limiter.charged("tpm:t") == spent  # here at once
    deadline = time.monotonic() + 5
    while int(await raw.get(prefix + "tpm:t:charged") or 0) != spent:  # and in Redis soon
        assert time.monotonic() < deadline, await raw.get(prefix + "tpm:t:charged")
        await asyncio.sleep(SWEEP_S)
    await limiter.aclose()
    # every unit lent and not spent went back: the limit is charged what was used, from
    # the moment of the first request
    tat = int(await raw.get(prefix + "tpm:t") or 0)
    assert began <= tat - spent * 6000 <= ended, (tat - spent * 6000 - began, ended - began)


async def test_refunds_stay_here_while_chunks_expire_and_come_again(
    redis_url: str, prefix: str
) -> None:
    """The steady state of a busy key: reserve, use less, refund. Across several chunk
    lifetimes the refunds go into the chunk, not one call to Redis each."""
    limiter = replica(redis_url, prefix)
    sent: list[object] = []
    real = limiter.inner.settle_later

    def counting(changes: list[tuple[Limit, int]], lease: str = "") -> None:
        sent.append(changes)
        real(changes, lease)

    limiter.inner.settle_later = counting  # type: ignore[method-assign]
    tpm = Limit("tpm:steady", count=10**9, period_s=60.0, cost=500, tally=True)
    began, n = time.monotonic(), 0
    while time.monotonic() - began < 3 * HOLD_S:
        assert (await limiter.acquire([tpm])).allowed
        await limiter.settle([(tpm, -480)])
        n += 1
        await asyncio.sleep(0.001)
    assert n > 300 and len(sent) <= 12, (n, len(sent))
    assert await limiter.charged("tpm:steady") == 20 * n
    await limiter.aclose()


async def test_a_request_gone_while_asking_leaves_nothing_charged(
    redis_url: str, prefix: str, raw: Any
) -> None:
    limiter = replica(redis_url, prefix)
    rpm = Limit("rpm:gone", count=1000, period_s=60.0)
    conc = Limit("conc:gone", count=1000, period_s=30.0, kind="lease")
    task = asyncio.ensure_future(limiter.acquire([rpm, conc], "gone"))
    await asyncio.sleep(0)  # sent, not answered
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(HOLD_S)
    await eventually(lambda: raw.get(prefix + "rpm:gone"), None)  # all back: full again
    await eventually(lambda: raw.zcard(prefix + "conc:gone"), 0)
    await limiter.aclose()


def test_four_replicas_spending_chunks_never_over_admit(redis_url: str, prefix: str) -> None:
    seconds = 3.0  # a chunk is 40 units, 20 ms
    admitted = four_processes(redis_url, prefix, count=2000, seconds=seconds, share=0.02)
    allowed = 2000 + 2000 * seconds  # the burst plus one per 0.5 ms: what GCRA admits
    assert admitted <= allowed + 1, admitted
    assert admitted >= 0.8 * allowed, admitted
