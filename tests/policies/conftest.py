"""Fixtures for the policy tests: the real Redis at 127.0.0.1:6379 (skipped where none
runs, unless LLMUX_TEST_REQUIRE_REDIS=1), a key prefix per test whose keys are deleted
afterwards, and the app as ``llmux serve`` builds its chain, around a fake backend."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from llmux.auth.control import AccessControl
from llmux.config import Settings, StoreSettings
from llmux.gateway import Gateway
from llmux.history import ChatHistory
from llmux.limits.policy import Quotas
from llmux.models.manager import ModelManager
from llmux.models.store import ModelStore
from llmux.policies.cache import Cache
from llmux.server.app import create_app
from llmux.services import Services, access_control, build_cache, build_quotas, policies
from llmux.storage.conversations import SqlConversations
from llmux.storage.database import Database, database_url
from llmux.upstream.router import UpstreamRouter

# the Redis fixture the limits tests use (skips, or fails in CI, where none runs)
from tests.limits.conftest import REDIS_URL, redis_url  # noqa: F401
from tests.support.fakes import FakeBackend
from tests.support.inprocess import BASE


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:  # noqa: F811 - the fixture, by name
    """A key prefix of this test's own; its keys are deleted afterwards."""
    import redis

    name = f"llmux-test:{uuid.uuid4().hex[:10]}:"
    yield name
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=name + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@dataclass
class CachedApp:
    client: TestClient
    backend: FakeBackend
    gateway: Gateway
    cache: Cache | None
    quotas: Quotas
    db: Database
    access: AccessControl


@contextmanager
def cached_app(
    tmp_path: Path, *, backend: FakeBackend | None = None, **settings: Any
) -> Iterator[CachedApp]:
    """The app with the chain ``llmux serve`` builds (usage records in the test's
    SQLite, the cache from ``settings``) around a fake backend, in process."""
    backend = backend or FakeBackend()
    config = Settings(home=tmp_path, **settings)
    db = Database(database_url(None, tmp_path))
    quotas = build_quotas(config, db)
    cache = build_cache(config)
    gateway = Gateway(
        backend,
        manager=ModelManager(ModelStore(tmp_path / "models"), StoreSettings()),
        upstreams=UpstreamRouter(config.upstreams),
        policies=policies(config, quotas, cache=cache),
    )
    if cache is not None:
        cache.bind(gateway.served_by, gateway.embed)
    history = ChatHistory(SqlConversations(db), gateway)
    access = access_control(config, db)
    services = Services(gateway, history, db, access, quotas, cache=cache)
    app = create_app(config, services)
    with TestClient(app, base_url=BASE, raise_server_exceptions=False) as client:
        yield CachedApp(client, backend, gateway, cache, quotas, db, access)
