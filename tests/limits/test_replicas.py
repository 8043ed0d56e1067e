"""Two real llmux processes sharing the real Redis count one caller's requests
together: a limit of 3 per minute admits three requests in all, whichever replica they
reach."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import MODEL, Server, start_server

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": False,
        "options": {"num_predict": 1}}  # fmt: skip


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> Iterator[tuple[Server, Server]]:
    env = {
        "LLMUX_LIMITS__GLOBAL_REQUESTS_PER_MINUTE": "3",
        "LLMUX_REDIS__URL": redis_url,
        "LLMUX_REDIS__PREFIX": f"llmux-test:{uuid.uuid4().hex[:10]}:",  # keys of its own
    }
    a = start_server(tmp_path_factory.mktemp("rl-a"), extra_env=env)
    b = start_server(tmp_path_factory.mktemp("rl-b"), extra_env=env)
    yield a, b
    a.stop()
    b.stop()


def test_two_replicas_share_one_limit(replicas: tuple[Server, Server]) -> None:
    a, b = replicas
    statuses = [httpx.post(f"{s.url}/api/chat", json=CHAT, timeout=120).status_code
                for s in (a, b, a, b, a)]  # fmt: skip
    assert statuses == [200, 200, 200, 429, 429]
    refused = httpx.post(f"{b.url}/v1/chat/completions", json=CHAT, timeout=60)
    assert refused.status_code == 429 and refused.headers["x-ratelimit-limit-requests"] == "3"
