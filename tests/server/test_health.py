"""``/healthz`` and ``/readyz`` (issue 19 item 4): public with access control on and off,
cheap (a probe storm runs one check), and honest: ``/readyz`` is 503 with
``Retry-After`` and the failed check when Redis (a closed port) or the database (a real
server's PostgreSQL database dropped under it) does not answer, and while draining."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmux.server.health import ReadinessProbe
from tests.conftest import _admin, free_port, fresh_pg_database, start_server
from tests.support.inprocess import App, in_process

STORE = {"bundled_model": "fake:latest"}  # the fake backend's model is the default one


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    with in_process(tmp_path, store=STORE) as app:
        yield app


def state(app: App) -> Any:
    return app.client.app.state  # type: ignore[attr-defined]


def test_healthz_and_readyz_answer_200_with_their_checks(app: App) -> None:
    r = app.client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = app.client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ready", "checks": {"database": "ok", "models": "ok"}}
    assert r.headers["cache-control"] == "no-store"
    assert app.client.head("/readyz").status_code == 200


def test_both_are_public_with_access_control_on(tmp_path: Path) -> None:
    with in_process(tmp_path, store=STORE, auth={"mode": "on"}) as app:
        assert app.client.get("/api/tags").status_code == 401  # the rest still needs a key
        assert app.client.get("/healthz").status_code == 200
        r = app.client.get("/readyz")
        assert r.status_code == 200 and r.json()["status"] == "ready", r.text


def test_a_missing_default_model_without_upstreams_is_not_ready(tmp_path: Path) -> None:
    with in_process(tmp_path, store={"bundled_model": "absent:1b"}) as app:
        r = app.client.get("/readyz")
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json() == {"status": "not ready", "checks": {"database": "ok", "models": "failed"}}


def test_no_default_model_and_no_upstreams_has_nothing_to_check(tmp_path: Path) -> None:
    with in_process(tmp_path, store={"bundled_model": ""}) as app:
        assert app.client.get("/readyz").json()["checks"]["models"] == "ok"


def test_a_probe_storm_runs_one_check(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    probe: ReadinessProbe = state(app).readiness
    probe.cache_s = 3600.0  # no clock in this test: one result, then the cache
    probe.last = None
    runs: list[float] = []
    real = ReadinessProbe.run

    async def counted(self: ReadinessProbe, services: Any) -> Any:
        runs.append(time.monotonic())
        await asyncio.sleep(0.05)  # the others arrive while this one runs
        return await real(self, services)

    monkeypatch.setattr(ReadinessProbe, "run", counted)

    async def storm() -> list[bool]:
        services = state(app).services
        results = await asyncio.gather(*(probe.check(services, False) for _ in range(50)))
        return [r.ready for r in results]

    assert all(app.client.portal.call(storm))  # type: ignore[attr-defined]
    for _ in range(20):
        assert app.client.get("/readyz").status_code == 200
    assert len(runs) == 1


def test_readyz_is_503_while_draining_and_healthz_stays_200(app: App) -> None:
    state(app).drain.begin()
    r = app.client.get("/readyz")
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json() == {"status": "draining", "checks": {"accepting": "failed"}}
    assert app.client.get("/healthz").status_code == 200


def test_an_unreachable_redis_is_a_failed_check(tmp_path: Path) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    with in_process(tmp_path, store=STORE, quotas=True, redis={"url": closed}) as app:
        r = app.client.get("/readyz")
        assert r.status_code == 503, r.text
        assert r.json()["checks"] == {"database": "ok", "redis": "failed", "models": "ok"}
        assert r.headers["retry-after"] == "1"


def test_a_reachable_redis_is_checked(tmp_path: Path) -> None:
    url = "redis://127.0.0.1:6379/0"
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001 - no Redis here: nothing to check against
        pytest.skip(f"Redis not reachable at {url}: {exc}")
    with in_process(tmp_path, store=STORE, quotas=True, redis={"url": url}) as app:
        r = app.client.get("/readyz")
        assert r.status_code == 200, r.text
        assert r.json()["checks"] == {"database": "ok", "redis": "ok", "models": "ok"}


# ---- a real server on PostgreSQL, access control on -----------------------------------


@pytest.fixture
def pg_database() -> Iterator[str]:
    yield from fresh_pg_database("llmux_health")


def test_a_real_server_whose_database_goes_away_is_not_ready(
    tmp_path: Path, pg_database: str
) -> None:
    env = {
        "LLMUX_STORAGE__DATABASE_URL": pg_database,
        "LLMUX_AUTH__MODE": "on",
        "LLMUX_AUTH__ADMIN_PASSWORD": "health admin password",
    }
    srv = start_server(tmp_path / "home", extra_env=env)
    try:
        with srv.client() as http:
            assert http.get("/api/tags").status_code == 401
            assert http.get("/healthz").json() == {"status": "ok"}
            r = http.get("/readyz")
            assert r.status_code == 200, r.text
            assert r.json()["checks"] == {"database": "ok", "models": "ok"}
            name = pg_database.rsplit("/", 1)[1]
            asyncio.run(_admin(f'DROP DATABASE "{name}" WITH (FORCE)'))
            r = until_not_ready(http)
            assert r.json() == {"status": "not ready", "checks": {"database": "failed", "models": "ok"}}  # fmt: skip
            assert r.headers["retry-after"] == "1"
            assert "postgres" not in r.text.lower()  # why: in the log, not for the caller
            assert http.get("/healthz").status_code == 200  # alive all the same
    finally:
        srv.stop()
    assert "not ready: database check failed" in srv.log.read_text()


def until_not_ready(http: httpx.Client) -> httpx.Response:
    """``/readyz`` until it says 503 (its answer is kept for a second)."""
    deadline = time.monotonic() + 30
    while True:
        r = http.get("/readyz")
        if r.status_code == 503 or time.monotonic() > deadline:
            assert r.status_code == 503, r.text
            return r
        time.sleep(0.2)
