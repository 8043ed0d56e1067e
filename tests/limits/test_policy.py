"""The rate-limit policy in the real app (in process, fake backend): a 429 in each API's
shape with Retry-After (rounded up), retry-after-ms and the x-ratelimit headers; the
openai SDK, at its default retries, gets through by itself; each caller has its own
counter; an unreachable Redis is a 503, never a silent per-process count."""

from __future__ import annotations

from pathlib import Path

import openai

from llmux.config import LimitsSettings
from llmux.limits.gcra import MemoryLimiter, RedisLimiter
from llmux.limits.policy import Quotas
from tests.support.inprocess import BASE, in_process

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "stream": False}


def limited(rpm: int) -> Quotas:
    return Quotas(LimitsSettings(requests_per_minute=rpm), MemoryLimiter())


def test_the_third_request_of_two_per_minute_is_a_429_in_each_shape(tmp_path: Path) -> None:
    with in_process(tmp_path, policies=[limited(2)]) as app:
        for _ in range(2):
            assert app.client.post("/v1/chat/completions", json=CHAT).status_code == 200
        r = app.client.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 429
        assert r.json()["error"]["type"] == "rate_limit_error"
        assert 29 <= int(r.headers["retry-after"]) <= 30  # one every 30 s, rounded up
        assert 29_000 < int(r.headers["retry-after-ms"]) <= 30_000
        assert r.headers["x-ratelimit-limit-requests"] == "2"
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
        r = app.client.post("/api/chat", json=CHAT)
        assert r.status_code == 429 and isinstance(r.json()["error"], str)
        assert "retry-after" in r.headers
        assert app.client.get("/api/tags").status_code == 200  # listings are not limited


def test_the_openai_sdk_waits_and_gets_through_by_itself(tmp_path: Path) -> None:
    with in_process(tmp_path, policies=[limited(60)]) as app:  # one a second, bursts of 60
        for _ in range(60):
            assert app.client.post("/v1/chat/completions", json=CHAT).status_code == 200
        assert app.client.post("/v1/chat/completions", json=CHAT).status_code == 429
        client = openai.OpenAI(base_url=f"{BASE}/v1", api_key="x", http_client=app.client)
        reply = client.chat.completions.create(
            model="fake", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content


def test_each_caller_has_its_own_count(tmp_path: Path) -> None:
    from tests.auth.test_access import bearer, key_for, make_user

    with in_process(tmp_path, policies=[limited(1)], auth={"mode": "on"}) as app:
        alice, bob = key_for(app, make_user(app, "alice")), key_for(app, make_user(app, "bob"))
        assert app.client.post("/api/chat", json=CHAT, headers=bearer(alice)).status_code == 200
        assert app.client.post("/api/chat", json=CHAT, headers=bearer(alice)).status_code == 429
        assert app.client.post("/api/chat", json=CHAT, headers=bearer(bob)).status_code == 200


def test_an_unreachable_redis_is_a_503(tmp_path: Path) -> None:
    gone = Quotas(LimitsSettings(requests_per_minute=5), RedisLimiter("redis://127.0.0.1:1/0"))
    with in_process(tmp_path, policies=[gone]) as app:
        r = app.client.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 503 and "Redis" in r.json()["error"]["message"]
        assert r.headers["retry-after"] == "1"
