"""The real Redis at 127.0.0.1:6379 (CI starts it); each test gets its own key prefix."""

from __future__ import annotations

import os
import uuid

import pytest

REDIS_URL = os.environ.get("LLMUX_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except (redis.RedisError, OSError) as exc:
        if os.environ.get("LLMUX_TEST_REQUIRE_REDIS") == "1":
            raise
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    return REDIS_URL


@pytest.fixture
def prefix() -> str:
    return f"llmux-test:{uuid.uuid4().hex[:10]}:"
