"""The response cache through the HTTP app (in process, fake backend): the
``X-Llmux-Cache`` header, the Cache-Control request header, the official clients
parsing hits, and the usage ledger (a hit recorded as one, at the cached price), on
SQLite and PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest
from openai import OpenAI

from llmux.core.context import new_request_id
from llmux.storage.database import Database, database_url
from llmux.storage.usage import SqlUsage, UsageRecord
from tests.policies.conftest import cached_app
from tests.support.inprocess import BASE

MODEL = "fake:latest"
PRICES = {"models": {MODEL: {"input": 1000, "cached_input": 100, "output": 2000}}}
GREEDY = {"temperature": 0}


def settings(**cache: Any) -> dict[str, Any]:
    return {
        "cache": {"enabled": True, **cache},
        "prices": PRICES,
        "usage": {"flush_s": 0.05},
    }


def ledger(home: Path, count: int) -> list[dict[str, Any]]:
    """The usage records, once ``count`` of them are written."""
    deadline = time.monotonic() + 5
    while True:
        with sqlite3.connect(home / "llmux.db") as conn:
            conn.row_factory = sqlite3.Row
            rows = [dict(r) for r in conn.execute("SELECT * FROM usage_records ORDER BY id")]
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def test_header_stream_and_json_share_an_entry_and_the_ledger_says_so(tmp_path: Path) -> None:
    with cached_app(tmp_path, **settings()) as app:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "options": GREEDY}
        r = app.client.post("/api/chat", json={**body, "stream": False})
        assert r.status_code == 200 and r.headers["x-llmux-cache"] == "miss"
        first = r.json()
        with app.client.stream("POST", "/api/chat", json=body) as s:
            assert s.headers["x-llmux-cache"] == "hit-l1"
            lines = [json.loads(line) for line in s.iter_lines() if line]
        assert len(lines) >= 2 and lines[-1]["done"]
        assert "".join(x["message"]["content"] for x in lines) == first["message"]["content"]
        assert lines[-1]["prompt_eval_count"] == 0  # all of the prompt came from the cache
        assert lines[-1]["eval_count"] == first["eval_count"]
        r = app.client.post("/api/chat", json={**body, "options": {"temperature": 0.7}})
        assert r.headers["x-llmux-cache"] == "bypass"
        assert len(app.backend.calls_of("chat")) == 2
        rows = ledger(tmp_path, 3)
    assert [r["cache"] for r in rows] == [None, "l1", None]
    miss, hit = rows[0], rows[1]
    assert hit["prompt_tokens"] == miss["prompt_tokens"] == hit["cached_tokens"] > 0
    assert hit["completion_tokens"] == miss["completion_tokens"]
    assert miss["cost_micros"] == miss["prompt_tokens"] * 1000 + miss["completion_tokens"] * 2000
    assert hit["cost_micros"] == hit["prompt_tokens"] * 100  # cached input, no completion
    assert hit["stream"] and not miss["stream"]


def test_cache_control_header_reaches_the_policy(tmp_path: Path) -> None:
    with cached_app(tmp_path, **settings()) as app:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
        path = "/v1/chat/completions"
        assert app.client.post(path, json=body).headers["x-llmux-cache"] == "miss"
        r = app.client.post(path, json=body, headers={"Cache-Control": "no-cache"})
        assert r.headers["x-llmux-cache"] == "miss"
        warm = {**body, "temperature": 0.9}
        assert app.client.post(path, json=warm).headers["x-llmux-cache"] == "bypass"
        opt_in = {"Cache-Control": "max-age=300"}
        states = [
            app.client.post(path, json=warm, headers=opt_in).headers["x-llmux-cache"]
            for _ in range(2)
        ]
        assert states == ["miss", "hit-l1"]
        r = app.client.post(path, json={**body, "model": "nope"})
        assert r.status_code == 404 and r.json()["error"]["message"]  # errors as usual


def test_keys_of_one_user_do_not_share_entries_and_cache_control_passes_access(
    tmp_path: Path,
) -> None:
    with cached_app(tmp_path, auth={"mode": "on"}, **settings()) as app:

        async def keys() -> list[str]:
            user = await app.access.add_user("alice", "correct horse battery", "user")
            return [str((await app.access.create_key(user))[1]) for _ in range(2)]

        first, second = app.client.portal.call(keys)  # type: ignore[attr-defined]
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": 0}

        def state(key: str, **headers: str) -> str:
            auth = {"Authorization": f"Bearer {key}", **headers}
            r = app.client.post("/v1/chat/completions", json=body, headers=auth)
            assert r.status_code == 200, r.text
            return r.headers["x-llmux-cache"]

        assert [state(first), state(first), state(second)] == ["miss", "hit-l1", "miss"]
        assert state(first, **{"Cache-Control": "no-cache"}) == "miss"
        assert app.client.post("/v1/chat/completions", json=body).status_code == 401


def test_the_official_clients_parse_hits(tmp_path: Path) -> None:
    with cached_app(tmp_path, **settings()) as app:
        states: list[str] = []

        def seen(response: httpx.Response) -> None:
            if "x-llmux-cache" in response.headers:
                states.append(response.headers["x-llmux-cache"])

        app.client.event_hooks["response"] = [seen]
        oa = OpenAI(base_url=BASE + "/v1", api_key="none", http_client=app.client)
        messages: Any = [{"role": "user", "content": "Name a colour."}]
        first = oa.chat.completions.create(model=MODEL, messages=messages, temperature=0)
        hit = oa.chat.completions.create(model=MODEL, messages=messages, temperature=0)
        assert hit.choices[0].message.content == first.choices[0].message.content
        assert hit.usage is not None and first.usage is not None
        assert hit.usage.prompt_tokens_details is not None
        assert hit.usage.prompt_tokens_details.cached_tokens == hit.usage.prompt_tokens
        parts = list(
            oa.chat.completions.create(
                model=MODEL, messages=messages, temperature=0, stream=True,
                stream_options={"include_usage": True},
            )
        )  # fmt: skip
        streamed = "".join(p.choices[0].delta.content or "" for p in parts if p.choices)
        assert streamed == first.choices[0].message.content
        usage = parts[-1].usage
        assert usage is not None and usage.prompt_tokens_details is not None
        assert usage.prompt_tokens_details.cached_tokens == usage.prompt_tokens
        comp = [oa.completions.create(model=MODEL, prompt="Once", temperature=0) for _ in range(2)]
        assert comp[0].choices[0].text == comp[1].choices[0].text

        ol = ollama.Client(host=BASE)
        ol._client = app.client  # the official client's parsing, over the in-process app
        gen = [ol.generate(model=MODEL, prompt="Once", options=GREEDY) for _ in range(2)]
        assert gen[0].response == gen[1].response and gen[1].done
        chat = list(ol.chat(model=MODEL, messages=messages, options=GREEDY, stream=True))
        assert chat[-1].done and "".join(c.message.content for c in chat)
        again = ol.chat(model=MODEL, messages=messages, options=GREEDY)
        assert again.message.content == "".join(c.message.content for c in chat)
    assert states == [
        "miss",
        "hit-l1",
        "hit-l1",
        "miss",
        "hit-l1",
        "miss",
        "hit-l1",
        "miss",
        "hit-l1",
    ]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        return database_url(None, tmp_path)
    return database_url(request.getfixturevalue("pg_url"), tmp_path)


@pytest.mark.anyio
async def test_the_cache_column_on_both_databases(db_url: Any) -> None:
    db = Database(db_url)
    await db.open()
    try:
        repo = SqlUsage(db)
        now = time.time()
        records = [
            UsageRecord(
                id=new_request_id(),
                request_id="r",
                created_at=now,
                day="2026-01-01",
                principal="addr:x",
                user_id=None,
                key_id=None,
                client_id=None,
                team=None,
                api="ollama",
                route="/api/chat",
                kind="chat",
                model="m",
                served="m",
                backend="local",
                stream=False,
                prompt_tokens=5,
                completion_tokens=2,
                cached_tokens=5 if cache else 0,
                cost_micros=1,
                status="ok",
                http_status=200,
                latency_ms=0.1,
                ttft_ms=None,
                cache=cache,
            )
            for cache in (None, "l1", "l2", "l1")
        ]
        await repo.add(records)
        rows = await repo.totals(["cache"], now - 1, now + 1)
        by = {r["cache"]: r["requests"] for r in rows}
        assert by == {None: 1, "l1": 2, "l2": 1}
    finally:
        async with db.engine.begin() as conn:
            await conn.exec_driver_sql("DELETE FROM usage_records")
        await db.aclose()


def test_a_semantic_hit_through_the_app_says_so_in_the_header_and_the_ledger(
    tmp_path: Path,
) -> None:
    """The fake backend embeds a text as (its length, 1, 0), so two texts of one length
    are the same vector: a reworded question of the same length is a semantic hit."""
    semantic = {"semantic": True, "semantic_model": MODEL}
    with cached_app(tmp_path, **settings(**semantic)) as app:

        def ask(text: str) -> Any:
            body = {"model": MODEL, "messages": [{"role": "user", "content": text}]}
            return app.client.post("/api/chat", json={**body, "options": GREEDY, "stream": False})

        first = ask("What is the capital of France?")
        again = ask("what is the capital of france?")
        other = ask("What isn't the capital France?")  # as long, but a negation: no hit
        assert first.headers["x-llmux-cache"] == "miss"
        assert again.headers["x-llmux-cache"] == "hit-semantic"
        assert again.json()["message"]["content"] == first.json()["message"]["content"]
        assert other.headers["x-llmux-cache"] == "miss"
        assert len(app.backend.calls_of("chat")) == 2
        rows = [r for r in ledger(tmp_path, 6) if r["kind"] == "chat"]
    assert [r["cache"] for r in rows] == [None, "semantic", None]
