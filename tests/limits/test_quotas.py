"""Quotas in the real app (in process, fake backend, real SQLite ledger): token limits
with their headers on every limited response, a prompt that can never fit, per-key
limits through the admin API, budgets and their 402, the balance, usage records and
their reports; every bad input a clear 400/404."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmux.core.request import ChatRequest
from tests.auth.test_access import bearer, call, key_for, make_user
from tests.support.fakes import FakeBackend
from tests.support.inprocess import App, in_process

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "one two three"}],
        "stream": False, "max_tokens": 5}  # fmt: skip
PRICES = {"currency": "CNY", "models": {"fake": {"input": 2.0, "output": 8.0}}}


def flush(app: App) -> None:
    assert app.quotas is not None and app.quotas.usage is not None
    call(app, app.quotas.usage.flush)


async def words(request: ChatRequest) -> int:
    """The fake backend's own prompt count (words), as an exact local counter."""
    return sum(len(m.content.split()) for m in request.messages)


def admin_key(app: App) -> dict[str, str]:
    from llmux.auth import scopes

    root = make_user(app, "root", role="admin")
    return bearer(key_for(app, root, scopes=frozenset(scopes.SCOPES)))


def test_token_limits_reserve_then_refund_and_say_so_on_every_response(tmp_path: Path) -> None:
    with in_process(tmp_path, quotas=True, limits={"tokens_per_minute": 100}) as app:
        r = app.client.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 200
        # the admitted response carries the headers too: the reservation (prompt bound +
        # max_tokens 5) taken; the fake used 3 + 2 tokens, and the rest comes back after
        assert r.headers["x-ratelimit-limit-tokens"] == "100"
        reserved = 100 - int(r.headers["x-ratelimit-remaining-tokens"])
        assert reserved > 5
        assert r.headers["x-ratelimit-reset-tokens"].endswith("s")
        assert "x-ratelimit-limit-requests" not in r.headers  # no request limit is set
        r = app.client.post("/v1/chat/completions", json=CHAT)
        assert 100 - int(r.headers["x-ratelimit-remaining-tokens"]) < 2 * reserved  # refunded
        assert call(app, app.quotas.limiter.charged, "tpm:addr:testclient") == 10  # type: ignore[union-attr]


def test_a_prompt_larger_than_the_token_limit_is_a_400_not_an_endless_429(
    tmp_path: Path,
) -> None:
    long = {**CHAT, "messages": [{"role": "user", "content": "word " * 50}]}
    with in_process(tmp_path, quotas=True, counter=words, backend=FakeBackend(name="local"),
                    limits={"tokens_per_minute": 20}) as app:  # fmt: skip
        r = app.client.post("/v1/chat/completions", json=long)
        assert r.status_code == 400 and "can never be admitted" in r.json()["error"]["message"]
        r = app.client.post("/api/chat", json={**long, "stream": False})
        assert r.status_code == 400 and "50 tokens" in r.json()["error"]
        assert app.client.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_the_tokens_of_a_spent_limit_are_refused_with_their_own_headers(tmp_path: Path) -> None:
    with in_process(tmp_path, quotas=True, counter=words, backend=FakeBackend(name="local"),
                    limits={"tokens_per_minute": 30}) as app:  # fmt: skip
        assert (
            app.client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 27}).status_code
            == 200
        )
        r = app.client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 27})
        assert r.status_code == 429, r.text
        assert r.headers["x-ratelimit-limit-tokens"] == "30"
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert "tokens per minute" in r.json()["error"]["message"]


def test_per_key_limits_through_the_admin_api(tmp_path: Path) -> None:
    with in_process(tmp_path, quotas=True, auth={"mode": "on"}) as app:
        root = admin_key(app)
        alice = make_user(app, "alice")
        key = key_for(app, alice)
        key_id = key.split("_")[0].removeprefix("sk-llmux-")
        r = app.client.put(f"/admin/limits/key:{key_id}", json={"requests_per_minute": 1},
                           headers=root)  # fmt: skip
        assert r.status_code == 200 and r.json()["requests_per_minute"] == 1
        assert app.client.post("/api/chat", json=CHAT, headers=bearer(key)).status_code == 200
        r = app.client.post("/api/chat", json=CHAT, headers=bearer(key))
        assert r.status_code == 429 and r.headers["x-ratelimit-limit-requests"] == "1"
        other = key_for(app, alice)  # another key of the same user: its own (no) limit
        assert app.client.post("/api/chat", json=CHAT, headers=bearer(other)).status_code == 200
        listed = app.client.get("/admin/limits", headers=root).json()["limits"]
        assert listed == [{"scope": f"key:{key_id}", "requests_per_minute": 1,
                           "tokens_per_minute": None, "concurrent_requests": None}]  # fmt: skip
        # a user's limit covers all of the user's keys together
        r = app.client.put("/admin/limits/user:alice", json={"requests_per_minute": 2},
                           headers=root)  # fmt: skip
        assert r.json()["scope"] == f"user:{alice.id}"
        statuses = [app.client.post("/api/chat", json=CHAT, headers=bearer(k)).status_code
                    for k in (other, other, key)]  # fmt: skip
        assert statuses == [200, 200, 429]
        assert app.client.delete(f"/admin/limits/user:{alice.id}", headers=root).status_code == 204
        assert app.client.post("/api/chat", json=CHAT, headers=bearer(other)).status_code == 200
        # not for users
        assert app.client.get("/admin/limits", headers=bearer(key)).status_code == 403


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/admin/limits/key", {"requests_per_minute": 1}, 400, "KIND:ID"),
        ("/admin/limits/planet:x", {"requests_per_minute": 1}, 400, "KIND:ID"),
        ("/admin/limits/model:fake", {}, 400, "at least one"),
        ("/admin/limits/model:fake", {"requests_per_minute": 0}, 400, "requests_per_minute"),
        ("/admin/limits/model:fake", {"requests_per_minute": "many"}, 400, "requests_per_minute"),
        ("/admin/limits/key:nosuchkey", {"requests_per_minute": 1}, 404, "no key"),
        ("/admin/limits/user:nobody", {"requests_per_minute": 1}, 404, "no user"),
    ],
)
def test_bad_limits_are_clear_errors(
    tmp_path: Path, path: str, body: dict[str, Any], status: int, says: str
) -> None:
    with in_process(tmp_path, quotas=True, auth={"mode": "on"}) as app:
        r = app.client.put(path, json=body, headers=admin_key(app))
        assert r.status_code == status, r.text
        assert says in r.json()["error"]["message"]


def test_a_model_limit_holds_for_all_callers_together(tmp_path: Path) -> None:
    limits = {"models": {"fake": {"requests_per_minute": 1}}}
    with in_process(tmp_path, quotas=True, limits=limits) as app:
        assert app.client.post("/api/chat", json=CHAT).status_code == 200
        r = app.client.post("/api/chat", json=CHAT, headers={"X-Forwarded-For": "10.0.0.9"})
        assert r.status_code == 429 and "model:fake" in r.json()["error"]


def test_a_budget_admits_what_it_covers_then_402_insufficient_balance(tmp_path: Path) -> None:
    with in_process(tmp_path, quotas=True, auth={"mode": "on"}, prices=PRICES) as app:
        root = admin_key(app)
        bob = make_user(app, "bob")
        key = bearer(key_for(app, bob))
        # the most a request can cost: prompt bound (bytes + overhead) at 2/M plus 5 output
        # tokens at 8/M; a budget of 0.0005 CNY covers a few of them
        r = app.client.post("/admin/budgets", json={"scope": "user:bob", "period": "day",
                                                    "amount": "0.0005"}, headers=root)  # fmt: skip
        assert r.status_code == 201, r.text
        assert r.json()["scope"] == f"user:{bob.id}" and r.json()["amount_micros"] == 500
        statuses = []
        for _ in range(30):
            statuses.append(app.client.post("/v1/chat/completions", json=CHAT, headers=key))
            flush(app)  # the ledger has each one before the next
        ok = [r for r in statuses if r.status_code == 200]
        refused = [r for r in statuses if r.status_code == 402]
        assert ok and refused and len(ok) + len(refused) == 30
        assert statuses.index(refused[0]) == len(ok)  # admitted until the money ran out
        error = refused[0].json()["error"]
        assert error["message"].startswith("Insufficient Balance")
        assert error["code"] == "insufficient_balance"
        assert refused[0].headers["x-should-retry"] == "false"
        # each admitted request cost exactly 3 prompt tokens at 2/M + 2 output at 8/M
        cost = -(-(3 * 2_000_000 + 2 * 8_000_000) // 1_000_000)
        report = app.client.get("/api/usage?group_by=model", headers=key).json()
        assert report["total"]["requests"] == len(ok)
        assert report["total"]["cost_micros"] == cost * len(ok)
        balance = app.client.get("/user/balance", headers=key).json()
        left = 500 - cost * len(ok)
        assert balance["balance_infos"][0]["total_balance"] == f"0.{left:06d}".rstrip("0").ljust(
            4, "0"
        )
        assert balance["balance_infos"][0]["currency"] == "CNY"
        assert balance["is_available"] is (left > 0)
        # the admin sees the budget's state; a refused request cost nothing
        state = app.client.get("/admin/budgets", headers=root).json()["budgets"][0]
        assert state["spent_micros"] == cost * len(ok) == state["counter_micros"]
        assert state["held_micros"] == 0


def test_without_a_budget_the_balance_is_the_configured_figure(tmp_path: Path) -> None:
    with in_process(tmp_path, quotas=True) as app:
        r = app.client.get("/user/balance")
        assert r.status_code == 200 and r.json()["is_available"] is True
        assert isinstance(r.json()["balance_infos"][0]["total_balance"], str)


def test_every_request_leaves_a_usage_record(tmp_path: Path) -> None:
    with in_process(tmp_path, quotas=True, prices=PRICES) as app:
        assert app.client.post("/v1/chat/completions", json=CHAT).status_code == 200
        with app.client.stream("POST", "/api/chat", json={**CHAT, "stream": True}) as r:
            assert r.status_code == 200 and len(list(r.iter_lines())) == 3
        assert (
            app.client.post("/api/embed", json={"model": "fake", "input": ["a b"]}).status_code
            == 200
        )
        app.backend.reply("x", error=RuntimeError("boom"), error_after=1)
        app.client.post("/v1/chat/completions", json=CHAT)
        assert app.client.post("/api/chat", json={**CHAT, "model": "nope"}).status_code == 404
        flush(app)
        report = app.client.get("/admin/usage?group_by=day,model").json()
        rows = {r["model"]: r for r in report["data"]}
        assert rows["fake:latest"]["requests"] == 4
        assert rows["nope:latest"]["requests"] == 1  # a 404, recorded too
        assert rows["nope:latest"]["cost_micros"] == 0
        # the failed one reported no usage: charged its prompt's upper bound, one piece
        assert rows["fake:latest"]["prompt_tokens"] > 3 + 3 + 2 + 3
        assert report["total"]["completion_tokens"] == 2 + 2 + 0 + 1
        assert report["writer"]["queued"] == 0 and report["writer"]["written"] == 5
        csv = app.client.get("/admin/usage?group_by=model&format=csv")
        assert csv.headers["content-type"].startswith("text/csv")
        lines = csv.text.splitlines()
        assert lines[0].startswith("model,requests,prompt_tokens")
        assert lines[1].startswith(f"fake:latest,4,{rows['fake:latest']['prompt_tokens']},5,")


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("group_by=planet", "group_by"),
        ("start=yesterday", "start"),
        ("start=2026-12-02&end=2026-12-01", "before"),
        ("start=2020-01-01&end=2026-01-01", "366 days"),
        ("format=xml", "format"),
    ],
)
def test_bad_usage_queries_are_400s(tmp_path: Path, query: str, says: str) -> None:
    with in_process(tmp_path, quotas=True) as app:
        r = app.client.get(f"/admin/usage?{query}")
        assert r.status_code == 400 and says in r.json()["error"]["message"]


def test_own_usage_is_only_ones_own(tmp_path: Path) -> None:
    with in_process(tmp_path, quotas=True, auth={"mode": "on"}) as app:
        a = bearer(key_for(app, make_user(app, "ann")))
        b = bearer(key_for(app, make_user(app, "ben")))
        for _ in range(3):
            app.client.post("/api/chat", json=CHAT, headers=a)
        app.client.post("/api/chat", json=CHAT, headers=b)
        flush(app)
        assert app.client.get("/api/usage", headers=a).json()["total"]["requests"] == 3
        assert app.client.get("/api/usage", headers=b).json()["total"]["requests"] == 1
        assert app.client.get("/admin/usage", headers=a).status_code == 403
        r = app.client.get("/api/usage?group_by=user", headers=a)
        assert r.status_code == 400


def test_a_repeated_request_id_is_recorded_and_charged_each_time(tmp_path: Path) -> None:
    """The request id is the client's (X-Request-Id): it cannot make two requests one."""
    with in_process(tmp_path, quotas=True, auth={"mode": "on"}, prices=PRICES) as app:
        root = admin_key(app)
        key = bearer(key_for(app, make_user(app, "eve")))
        app.client.post("/admin/budgets", json={"scope": "user:eve", "period": "total",
                                                "amount": "1.00"}, headers=root)  # fmt: skip
        same = {**key, "X-Request-Id": "same-id"}
        for _ in range(3):
            r = app.client.post("/v1/chat/completions", json=CHAT, headers=same)
            assert r.status_code == 200 and r.headers["x-request-id"] == "same-id"
        flush(app)
        total = app.client.get("/api/usage", headers=key).json()["total"]
        assert total["requests"] == 3
        budget = app.client.get("/admin/budgets", headers=root).json()["budgets"][0]
        assert budget["spent_micros"] == total["cost_micros"] == budget["counter_micros"] > 0
        assert budget["held_micros"] == 0
