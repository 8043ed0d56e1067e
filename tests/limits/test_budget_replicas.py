"""Budgets on two real replicas sharing the real Redis and one PostgreSQL ledger: 200
concurrent requests against a budget that covers 10 admit at most 10, even with one
replica killed (SIGKILL) in the middle; after its restart, reconcile finds no drift
between the counter and the ledger; the balance is the budget minus the ledger; the CLI
shows and reconciles the same."""

from __future__ import annotations

import asyncio
import secrets
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import MODEL, Server, fresh_pg_database, start_server

PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse."}]


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Path]:
    db = fresh_pg_database("llmux_budget")
    url = next(db)
    path = tmp_path_factory.mktemp("budget") / "llmux.toml"
    path.write_text(
        textwrap.dedent(f"""
        [auth]
        mode = "on"
        secret = "{secrets.token_urlsafe(32)}"
        admin_password = "budget admin password"
        [storage]
        database_url = "{url}"
        [redis]
        url = "{redis_url}"
        prefix = "llmux-test:{uuid.uuid4().hex[:10]}:"
        [limits]
        refresh_s = 0.5
        lease_s = 2.0  # a killed replica's holds lapse after 2 s
        [usage]
        flush_s = 0.2
        [prices]
        currency = "CNY"
        [prices.models."{MODEL}"]
        input = 1.0   # one micro-yuan per prompt token
        output = 0.0
    """)
    )
    yield path
    next(db, None)


def cli(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMUX_")}
    env["LLMUX_CONFIG"] = str(config)
    env["LLMUX_HOME"] = str(config.parent)
    return subprocess.run([sys.executable, "-m", "llmux", *args], env=env, capture_output=True,
                          text=True, timeout=60, check=check)  # fmt: skip


def test_200_requests_on_a_budget_for_10_with_a_replica_killed(
    tmp_path_factory: pytest.TempPathFactory, config: Path
) -> None:
    env = {"LLMUX_CONFIG": str(config)}
    a = start_server(tmp_path_factory.mktemp("budget-a"), extra_env=env)
    b = start_server(tmp_path_factory.mktemp("budget-b"), extra_env=env)
    servers: list[Server] = [b, a]  # even requests go to b, odd ones to a
    try:
        admin = cli(config, "keys", "create", "--user", "admin", "--scopes", "inference admin")
        root = {"Authorization": f"Bearer {admin.stdout.strip().splitlines()[-1]}"}
        # warm both engines (exact prompt counts need the loaded tokenizer) with the
        # admin's key, which no budget covers; the price is per prompt token only
        body = {"model": MODEL, "messages": PROMPT, "max_tokens": 48, "temperature": 0}
        cost = 0
        for s in servers:
            r = httpx.post(f"{s.url}/v1/chat/completions", json=body, headers=root, timeout=120)
            assert r.status_code == 200, r.text
            cost = r.json()["usage"]["prompt_tokens"]
        key = cli(config, "keys", "create", "--user", "admin", "--scopes", "inference")
        text = key.stdout.strip().splitlines()[-1]
        key_id = text.removeprefix("sk-llmux-").split("_")[0]
        amount = f"0.{10 * cost:06d}"  # ten requests' worth, in micro-yuan
        made = cli(config, "budgets", "set", f"key:{key_id}", amount, "--period", "day")
        assert "budget" in made.stderr
        time.sleep(1.0)  # both replicas have reread the budgets
        headers = {"Authorization": f"Bearer {text}"}

        async def load() -> list[int | str]:
            async with httpx.AsyncClient(timeout=120) as client:

                async def one(i: int) -> int | str:
                    url = servers[i % 2].url
                    if i % 2 == 1:
                        await asyncio.sleep(0.3)  # b's requests first: b holds the money
                    try:
                        r = await client.post(f"{url}/v1/chat/completions", json=body,
                                              headers=headers)  # fmt: skip
                    except httpx.HTTPError as exc:  # the killed replica's
                        return type(exc).__name__
                    return r.status_code

                async def kill() -> None:
                    await asyncio.sleep(1.0)  # while b's admitted requests run
                    b.proc.send_signal(signal.SIGKILL)

                results = await asyncio.gather(*(one(i) for i in range(200)), kill())
                return list(results[:200])

        results = asyncio.run(load())
        ok = results.count(200)
        assert ok <= 10, results
        assert results.count(402) >= 190 - (200 - len([r for r in results if r in (200, 402)]))
        assert set(results) <= {200, 402, "RemoteProtocolError", "ReadError", "ConnectError"}
        b.proc.wait(timeout=30)
        b = start_server(b.home, extra_env=env)  # restarted, cold
        servers[0] = b
        time.sleep(0.5)  # the last records of a have landed (flush_s 0.2)
        r = httpx.post(f"{b.url}/admin/budgets/reconcile", headers=root, timeout=30)
        assert r.status_code == 200, r.text
        state = r.json()["budgets"][0]
        assert state["counter_micros"] is not None
        assert state["drift_micros"] == 0, state
        # what was charged plus what the dead replica still held: never past ten
        assert state["ledger_micros"] % cost == 0 and state["held_micros"] % cost == 0
        assert state["ledger_micros"] + state["held_micros"] <= 10 * cost, state
        assert state["ledger_micros"] == ok * cost  # every answered request was recorded
        time.sleep(2.5)  # the dead replica's holds lapse (lease_s 2 s)
        r = httpx.post(f"{a.url}/admin/budgets/reconcile", headers=root, timeout=30)
        again = r.json()["budgets"][0]
        assert again["held_micros"] == 0 and again["drift_micros"] == 0, again
        extra = 0
        if state["ledger_micros"] < 10 * cost:  # what the dead replica held is free again
            r = httpx.post(f"{a.url}/v1/chat/completions", json=body, headers=headers, timeout=60)
            assert r.status_code == 200, r.text
            extra = cost
            time.sleep(0.5)  # its record lands (flush_s 0.2)
        listed = httpx.get(f"{a.url}/admin/budgets", headers=root, timeout=10).json()
        budget = listed["budgets"][0]
        assert budget["spent_micros"] == state["ledger_micros"] + extra
        assert budget["spent_micros"] % cost == 0
        balance = httpx.get(f"{a.url}/user/balance", headers=headers, timeout=10).json()
        left = 10 * cost - budget["spent_micros"]
        assert balance["balance_infos"][0]["total_balance"] == budget["left"]
        assert round(float(budget["left"]) * 1_000_000) == left
        assert balance["is_available"] is (left > 0)
        # the CLI sees the same, and finds nothing to fix
        shown = cli(config, "budgets", "reconcile")
        assert shown.returncode == 0 and key_id in cli(config, "budgets", "list").stdout
        usage = cli(config, "usage", "--by", "key", "--csv").stdout.splitlines()
        assert usage[0].startswith("key,requests,")
    finally:
        for s in servers:
            s.stop()
