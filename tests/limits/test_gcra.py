"""GCRA rate limits, the same on Redis (the real one, through the Lua script) and in
process: bursts up to the limit, refusals that consume nothing, an exact retry time,
several limits charged all or none, and no over-admission with four processes sharing
one Redis key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from llmux.limits.allowance import Allowances
from llmux.limits.gcra import Limit, Limiter, MemoryLimiter, RedisLimiter
from tests.limits.hammer import four_processes

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "redis", "allowance"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[Limiter]:
    """The same answers from each: in process, in Redis, and in Redis with a replica's
    allowance (which takes chunks of the 100-unit limits here)."""
    if request.param == "memory":
        made: Limiter = MemoryLimiter()
    else:
        made = RedisLimiter(request.getfixturevalue("redis_url"),
                            prefix=request.getfixturevalue("prefix"))  # fmt: skip
        if request.param == "allowance":
            made = Allowances(made, share=0.02, hold_s=1.0, lease_s=30.0)
    yield made
    await made.aclose()


async def test_a_burst_up_to_the_limit_then_an_exact_wait(limiter: Limiter) -> None:
    limit = Limit("a", count=5, period_s=1.0)  # one every 200 ms, bursts of 5
    decisions = [await limiter.acquire([limit]) for _ in range(5)]
    assert all(d.allowed for d in decisions)
    assert [d.remaining[0] for d in decisions] == [4, 3, 2, 1, 0]
    refused = await limiter.acquire([limit])
    assert not refused.allowed and 0.1 < refused.retry_after_s <= 0.2
    for _ in range(3):  # refusals consume nothing: the wait does not grow
        again = await limiter.acquire([limit])
        assert not again.allowed and again.retry_after_s <= refused.retry_after_s
    await asyncio.sleep(again.retry_after_s + 0.01)
    assert (await limiter.acquire([limit])).allowed
    assert not (await limiter.acquire([limit])).allowed


async def test_several_limits_are_charged_all_or_none(limiter: Limiter) -> None:
    tight, loose = Limit("tight", count=2, period_s=10), Limit("loose", count=100, period_s=10)
    for _ in range(2):
        assert (await limiter.acquire([tight, loose])).allowed
    refused = await limiter.acquire([tight, loose])
    assert not refused.allowed and refused.remaining[0] == 0
    # the loose limit was not charged by the refused request
    alone = await limiter.acquire([loose])
    assert alone.allowed and alone.remaining[0] == 97


def test_four_processes_on_one_redis_key_never_over_admit(redis_url: str, prefix: str) -> None:
    seconds = 3.0
    admitted = four_processes(redis_url, prefix, count=20, seconds=seconds)
    # exactly the burst (20) plus one per 50 ms of the 3 s, give or take the one unit
    # that is due right at the end; never more
    allowed = 20 + 20 * seconds
    assert admitted <= allowed + 1, admitted
    # and near it: the processes, busy on two cores, lose a little of the window
    assert admitted >= 0.8 * allowed, admitted


# -- token settlement and concurrency leases --------------------------------------------


async def test_a_refund_gives_tokens_back_and_a_charge_takes_more(limiter: Limiter) -> None:
    tpm = Limit("tpm", count=100, period_s=60.0, cost=80, tally=True)
    first = await limiter.acquire([tpm])
    assert first.allowed and first.remaining == (20,)
    assert not (await limiter.acquire([Limit("tpm", 100, 60.0, cost=30, tally=True)])).allowed
    await limiter.settle([(tpm, -70)])  # it used 10 of its 80
    again = await limiter.acquire([Limit("tpm", 100, 60.0, cost=30, tally=True)])
    assert again.allowed and again.remaining == (60,)
    await limiter.settle([(tpm, 50)])  # this one used 80 of its 30
    assert (await limiter.acquire([Limit("tpm", 100, 60.0, cost=11)])).allowed is False
    assert await limiter.charged("tpm") == 10 + 80  # the tally is what was really used


async def test_a_refund_never_leaves_more_than_a_full_limit(limiter: Limiter) -> None:
    tpm = Limit("tpm2", count=100, period_s=60.0, cost=50, tally=True)
    assert (await limiter.acquire([tpm])).allowed
    await limiter.settle([(tpm, -500)])  # a wrong, too large refund
    burst = await limiter.acquire([Limit("tpm2", 100, 60.0, cost=100)])
    assert burst.allowed and burst.remaining == (0,)
    assert not (await limiter.acquire([Limit("tpm2", 100, 60.0, cost=2)])).allowed


async def test_concurrency_leases_are_held_until_given_back(limiter: Limiter) -> None:
    conc = Limit("conc", count=2, period_s=30.0, kind="lease")
    assert (await limiter.acquire([conc], "a")).allowed
    second = await limiter.acquire([conc], "b")
    assert second.allowed and second.remaining == (0,)
    refused = await limiter.acquire([conc], "c")
    assert not refused.allowed and refused.retry_after_s == 1.0
    await limiter.settle([(conc, 0)], "a")
    assert (await limiter.acquire([conc], "c")).allowed


async def test_a_lease_of_a_dead_process_expires_and_a_renewed_one_does_not(
    limiter: Limiter,
) -> None:
    conc = Limit("conc2", count=1, period_s=0.5, kind="lease")
    assert (await limiter.acquire([conc], "dead")).allowed  # never given back
    assert not (await limiter.acquire([conc], "x")).allowed
    await asyncio.sleep(0.6)
    assert (await limiter.acquire([conc], "alive")).allowed  # the dead one expired
    for _ in range(4):
        await asyncio.sleep(0.25)
        await limiter.renew([(conc, "alive")])
    assert not (await limiter.acquire([conc], "y")).allowed  # still held, 1 s later


async def test_a_refused_lease_charges_nothing_else(limiter: Limiter) -> None:
    conc = Limit("conc3", count=1, period_s=30.0, kind="lease")
    rpm = Limit("rpm3", count=5)
    assert (await limiter.acquire([conc, rpm], "a")).allowed
    for _ in range(3):
        assert not (await limiter.acquire([conc, rpm], "b")).allowed
    await limiter.settle([(conc, 0)], "a")
    after = await limiter.acquire([conc, rpm], "b")
    assert after.allowed and after.remaining[1] == 3  # the refusals took no requests
