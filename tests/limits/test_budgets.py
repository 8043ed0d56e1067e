"""Budget counters, in Redis (the real one) and in process: holds all-or-none, 200
concurrent holds against a budget that covers 10, an idempotent settle, seeding from the
ledger that cannot inflate, expiring holds, and reconcile's compare-and-set."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from llmux.limits.budgets import (
    BudgetCounters,
    Hold,
    MemoryBudgets,
    RedisBudgets,
    counter_key,
    money,
    parse_money,
)
from llmux.storage.usage import BudgetRow

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "redis"])
async def counters(request: pytest.FixtureRequest) -> AsyncIterator[BudgetCounters]:
    if request.param == "memory":
        yield MemoryBudgets()
        return
    from llmux.limits.gcra import RedisLimiter

    limiter = RedisLimiter(request.getfixturevalue("redis_url"))  # its connection pool
    yield RedisBudgets(limiter.scripts, request.getfixturevalue("prefix"))
    await limiter.aclose()


def budget(amount: int, name: str = "b1") -> BudgetRow:
    return BudgetRow(name, f"user:{name}", "day", amount)


def hold(b: BudgetRow, amount: int) -> Hold:
    return Hold(b, counter_key(b), amount, b.amount_micros)


async def seeded(value: int) -> int:
    return value


async def test_200_concurrent_holds_against_a_budget_for_10(counters: BudgetCounters) -> None:
    b = budget(1000)
    seeds = 0

    async def seed(_: BudgetRow) -> int:
        nonlocal seeds
        seeds += 1
        await asyncio.sleep(0.01)  # a slow ledger: many requests find the counter cold
        return 0

    results = await asyncio.gather(
        *(counters.hold(f"r{i}", [hold(b, 100)], seed) for i in range(200))
    )
    assert sum(r is None for r in results) == 10
    spent, held = await counters.state(counter_key(b))
    assert (spent, held) == (0, 1000)


async def test_a_settle_counts_once_and_frees_the_hold(counters: BudgetCounters) -> None:
    b = budget(1000, "b2")
    assert await counters.hold("r1", [hold(b, 600)], lambda _: seeded(0)) is None
    refused = await counters.hold("r2", [hold(b, 600)], lambda _: seeded(0))
    assert refused is not None and refused.available == 400
    await counters.settle("r1", [(hold(b, 600), 250)])
    await counters.settle("r1", [(hold(b, 600), 250)])  # a retried settle
    assert await counters.state(counter_key(b)) == (250, 0)
    assert await counters.hold("r2", [hold(b, 600)], lambda _: seeded(0)) is None


async def test_a_cold_counter_is_seeded_from_the_ledger_once(counters: BudgetCounters) -> None:
    b = budget(1000, "b3")
    assert await counters.hold("r1", [hold(b, 100)], lambda _: seeded(700)) is None
    # a second replica starting cold reads the ledger too; its seed cannot add again
    assert await counters.hold("r2", [hold(b, 100)], lambda _: seeded(700)) is None
    assert await counters.state(counter_key(b)) == (700, 200)
    assert await counters.hold("r3", [hold(b, 101)], lambda _: seeded(700)) is not None


async def test_holds_on_several_budgets_are_all_or_none(counters: BudgetCounters) -> None:
    roomy, tight = budget(10_000, "roomy"), budget(150, "tight")
    assert (
        await counters.hold("r1", [hold(roomy, 100), hold(tight, 100)], lambda _: seeded(0)) is None
    )
    refused = await counters.hold("r2", [hold(roomy, 100), hold(tight, 100)], lambda _: seeded(0))
    assert refused is not None and refused.budget is tight
    assert (await counters.state(counter_key(roomy)))[1] == 100  # only r1's hold


async def test_reconcile_sets_the_counter_to_the_ledger_unless_it_moved(
    counters: BudgetCounters,
) -> None:
    b = budget(1000, "b4")
    await counters.hold("r1", [hold(b, 10)], lambda _: seeded(300))
    key = counter_key(b)
    assert not await counters.reconcile(key, 250, 299)  # someone settled meanwhile
    assert await counters.reconcile(key, 250, 300)
    assert (await counters.state(key))[0] == 250


def test_money_reads_and_writes_amounts_exactly() -> None:
    assert money(0) == "0.00" and money(1_500_000) == "1.50" and money(1) == "0.000001"
    assert parse_money("12.5") == 12_500_000 and parse_money("0.000001") == 1
    for bad in ("-1", "1.2345678", "abc", ""):
        with pytest.raises(ValueError):
            parse_money(bad)
