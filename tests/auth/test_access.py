"""Access control in the real app (in-process, fake backend, real SQLite): deny by
default on every route, each API's 401 and 403, keys through the official clients,
model patterns, bootstrap and the setup token, throttling, the admin API."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ollama
import openai
import pytest
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocketDisconnect

from llmux.auth import scopes as sc
from llmux.config import Settings
from llmux.errors import LlmuxError
from llmux.server.app import create_app
from llmux.storage.principals import User
from tests.support.inprocess import BASE, App, in_process

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "stream": False}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    with in_process(tmp_path, auth={"mode": "on", "max_failures": 1000}) as app:
        yield app


def make_user(app: App, name: str = "alice", role: str = "user") -> User:
    user: User = call(app, app.access.add_user, name, "correct horse battery", role)
    return user


def call(app: App, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run an AccessControl coroutine on the app's own event loop."""

    async def go() -> Any:
        return await fn(*args, **kwargs)

    return app.client.portal.call(go)  # type: ignore[attr-defined]


def key_for(app: App, user: User, **kwargs: Any) -> str:
    _, text = call(app, app.access.create_key, user, **kwargs)
    return str(text)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# ---- every route -----------------------------------------------------------------------


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def app_routes(app: App) -> list[tuple[str, str, str]]:
    """(kind, method, path template) for every route the app registers."""
    out = []
    for route in app.client.app.state.routes:  # type: ignore[attr-defined]
        if isinstance(route, WebSocketRoute):
            out.append(("ws", "GET", route.path))
        elif isinstance(route, Route):
            for method in sorted(route.methods or ()):
                out.append(("http", method, route.path))
    return out


def test_every_route_has_a_declared_scope(app: App) -> None:
    missing = [p for _, _, p in app_routes(app) if not sc.listed(p)]
    assert not missing, f"routes without a scope in auth/scopes.py: {missing}"


def test_every_route_but_the_public_ones_needs_a_credential(app: App) -> None:
    checked = 0
    for kind, method, path in app_routes(app):
        public = sc.route_scope(path) == sc.PUBLIC
        if kind == "ws":
            if public:
                continue
            with (
                pytest.raises(WebSocketDisconnect) as closed,
                app.client.websocket_connect(concrete(path)) as ws,
            ):
                ws.receive_text()
            assert closed.value.code == 1008, path
            checked += 1
            continue
        r = app.client.request(method, concrete(path), json={})
        if public:
            assert r.status_code != 401, (method, path)
            continue
        assert r.status_code == 401, (method, path, r.status_code, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer"), path
        checked += 1
    assert checked > 40


def test_a_key_without_the_scope_gets_403_everywhere_that_needs_one(app: App) -> None:
    user = make_user(app, "admin-ish", "admin")
    checked = 0
    for kind, method, path in app_routes(app):
        required = sc.route_scope(path)
        if kind == "ws" or required in (sc.PUBLIC, sc.ANY):
            continue
        others = frozenset(sc.SCOPES) - {required}
        key = key_for(app, user, scopes=others)
        r = app.client.request(method, concrete(path), json={}, headers=bearer(key))
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
        checked += 1
    assert checked > 30


def test_the_api_description_is_public(tmp_path: Path) -> None:
    settings = {"auth": {"mode": "on"}, "server": {"api_docs": True}}
    with in_process(tmp_path, **settings) as app:
        assert app.client.get("/openapi.json").status_code == 200
        assert app.client.get("/docs").status_code == 200
        assert app.client.get("/api/version").status_code == 200
        assert app.client.get("/api/tags").status_code == 401


def test_401_and_403_come_in_each_apis_shape(app: App) -> None:
    r = app.client.get("/api/tags")
    assert r.status_code == 401 and set(r.json()) == {"error"}
    assert isinstance(r.json()["error"], str)
    r = app.client.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-wrong"))
    assert r.status_code == 401
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key"
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    assert "sk-wrong" not in r.text
    user = make_user(app)
    key = key_for(app, user, scopes=frozenset({"inference"}))
    r = app.client.get("/v1/models", headers=bearer(key))
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
    assert r.json()["error"]["type"] == "permission_error"


# ---- the official clients ---------------------------------------------------------------


def test_the_openai_client_gets_through_with_a_key_and_raises_on_a_bad_one(app: App) -> None:
    user = make_user(app)
    key = key_for(app, user)
    good = openai.OpenAI(base_url=f"{BASE}/v1", api_key=key, http_client=app.client)
    reply = good.chat.completions.create(model="fake", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content
    assert [m.id for m in good.models.list()]
    bad = openai.OpenAI(base_url=f"{BASE}/v1", api_key=key[:-2] + "zz", http_client=app.client,
                        max_retries=0)  # fmt: skip
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    key_id = key.removeprefix("sk-llmux-").split("_")[0]
    call(app, app.access.revoke_key, key_id)
    with pytest.raises(openai.AuthenticationError) as raised:
        good.with_options(max_retries=0).models.list()
    assert "revoked" in str(raised.value)


def test_the_ollama_client_with_a_bearer_header(app: App) -> None:
    user = make_user(app)
    key = key_for(app, user)
    client = ollama.Client(host=BASE, headers=bearer(key))
    # the official client's calls, sent in-process with the headers it was given
    app.client.headers.update(client._client.headers)
    client._client = app.client
    try:
        assert client.chat(model="fake", messages=[{"role": "user", "content": "hi"}]).message
        assert client.list().models
    finally:
        del app.client.headers["authorization"]


def test_x_api_key_and_an_expired_key(app: App) -> None:
    user = make_user(app)
    key = key_for(app, user)
    assert app.client.get("/api/tags", headers={"x-api-key": key}).status_code == 200
    short = key_for(app, user, expires_in=0.5)
    assert app.client.get("/api/tags", headers={"x-api-key": short}).status_code == 200
    import time

    time.sleep(0.6)
    r = app.client.get("/api/tags", headers={"x-api-key": short})
    assert r.status_code == 401 and "expired" in r.json()["error"]


def test_a_disabled_user_s_keys_stop_working(app: App) -> None:
    user = make_user(app)
    key = key_for(app, user)
    assert app.client.get("/api/tags", headers=bearer(key)).status_code == 200
    call(app, app.access.update_user, user.id, disabled=True)
    assert app.client.get("/api/tags", headers=bearer(key)).status_code == 401


# ---- model patterns ----------------------------------------------------------------------


def test_a_key_sees_and_uses_only_its_models(tmp_path: Path) -> None:
    from tests.support.fakes import FakeBackend

    backend = FakeBackend(model_names=("fake:latest", "deepseek-r1:7b", "deepseek-v3:latest"))
    with in_process(tmp_path, backend=backend, auth={"mode": "on"}) as app:
        user = make_user(app)
        key = key_for(app, user, models=("deepseek-*",))
        names = {
            m["name"] for m in app.client.get("/api/tags", headers=bearer(key)).json()["models"]
        }
        assert names == {"deepseek-r1:7b", "deepseek-v3:latest"}
        ids = {m["id"] for m in app.client.get("/v1/models", headers=bearer(key)).json()["data"]}
        assert ids == names
        r = app.client.post("/api/chat", json=CHAT, headers=bearer(key))
        assert r.status_code == 403 and "may not use the model" in r.json()["error"]
        ok = {**CHAT, "model": "deepseek-r1:7b"}
        assert app.client.post("/api/chat", json=ok, headers=bearer(key)).status_code == 200
        r = app.client.post("/api/show", json={"model": "fake"}, headers=bearer(key))
        assert r.status_code == 403


# ---- first start, setup, throttling ---------------------------------------------------------


def test_the_setup_token_makes_the_first_admin_once(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with in_process(tmp_path, auth={"mode": "on"}) as app:
        printed = capfd.readouterr().err
        token = re.search(r'"token": "([^"]+)"', printed)
        assert token, printed
        body = {"token": "wrong", "name": "root", "password": "a long password"}
        assert app.client.post("/auth/setup", json=body).status_code == 401
        body["token"] = token.group(1)
        r = app.client.post("/auth/setup", json=body)
        assert r.status_code == 201 and r.json()["user"]["role"] == "admin"
        assert app.client.post("/auth/setup", json={**body, "name": "again"}).status_code == 401


def test_an_admin_from_the_environment_needs_no_setup_token(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with in_process(tmp_path, auth={"mode": "on", "admin_password": "from the env 123"}) as app:
        assert "setup token" not in capfd.readouterr().err
        user = call(app, app.access.login, "admin", "from the env 123", None)
        assert user.role == "admin"


def test_failed_attempts_are_throttled_per_address(tmp_path: Path) -> None:
    with in_process(tmp_path, auth={"mode": "on", "max_failures": 3}) as app:
        for _ in range(3):
            assert app.client.get("/api/tags", headers=bearer("sk-nope")).status_code == 401
        r = app.client.get("/api/tags", headers=bearer("sk-nope"))
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1


# ---- safe defaults -------------------------------------------------------------------------


def test_serving_beyond_loopback_without_auth_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LlmuxError) as refused:
        create_app(Settings(home=tmp_path, host="0.0.0.0:11434"))
    assert "[auth] mode" in refused.value.message and "\n" not in refused.value.message
    create_app(Settings(home=tmp_path, host="0.0.0.0:11434", auth={"mode": "off"}))
    create_app(Settings(home=tmp_path, host="0.0.0.0:11434", auth={"mode": "on"}))


def test_llmux_serve_on_0000_exits_with_one_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMUX_")}
    env["LLMUX_HOME"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "llmux", "serve", "--host", "0.0.0.0:11999"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "[auth] mode" in lines[0], done.stderr


# ---- a user's own keys and the admin API ------------------------------------------------------


def test_a_user_manages_their_own_keys_and_no_one_elses(app: App) -> None:
    alice, bob = make_user(app, "alice"), make_user(app, "bob")
    a_key, b_key = key_for(app, alice), key_for(app, bob)
    r = app.client.post("/api/keys", json={"name": "laptop", "scopes": ["inference"]},
                        headers=bearer(a_key))  # fmt: skip
    assert r.status_code == 201 and r.headers["cache-control"] == "no-store"
    made = r.json()
    assert made["key"].startswith("sk-llmux-") and made["scopes"] == ["inference"]
    listed = app.client.get("/api/keys", headers=bearer(a_key)).json()["keys"]
    assert made["id"] in {k["id"] for k in listed} and all("key" not in k for k in listed)
    assert all("hash" not in k for k in listed)
    # the key in use has a last-used time (written in the background)
    a_id = a_key.removeprefix("sk-llmux-").split("_")[0]
    for _ in range(50):
        listed = app.client.get("/api/keys", headers=bearer(a_key)).json()["keys"]
        if next(k for k in listed if k["id"] == a_id)["last_used_at"]:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("last_used_at was never set")
    assert next(k for k in listed if k["id"] == made["id"])["last_used_at"] is None
    r = app.client.delete(f"/api/keys/{made['id']}", headers=bearer(b_key))
    assert r.status_code == 404
    r = app.client.post("/api/keys", json={"scopes": ["admin"]}, headers=bearer(a_key))
    assert r.status_code == 403
    assert app.client.delete(f"/api/keys/{made['id']}", headers=bearer(a_key)).status_code == 204
    assert app.client.get("/api/tags", headers=bearer(made["key"])).status_code == 401


def test_the_admin_api(app: App) -> None:
    root = make_user(app, "root", "admin")
    admin_key = key_for(app, root, scopes=frozenset(sc.SCOPES))
    h = bearer(admin_key)
    r = app.client.post("/admin/users", json={"name": "carol", "password": "pw-long-enough"},
                        headers=h)  # fmt: skip
    assert r.status_code == 201 and "password" not in r.text
    carol = r.json()["id"]
    assert app.client.post("/admin/users", json={"name": "carol", "password": "x" * 9},
                           headers=h).status_code == 400  # fmt: skip
    r = app.client.post("/admin/keys", json={"user": "carol", "scopes": "inference models:read",
                                             "models": ["qwen*"], "expires_in": "30d"}, headers=h)  # fmt: skip
    assert r.status_code == 201
    made = r.json()
    assert made["models"] == ["qwen*"] and made["expires_at"] > made["created_at"] + 29 * 86400
    r = app.client.post(f"/admin/keys/{made['id']}/rotate", headers=h)
    assert r.status_code == 201 and r.json()["key"] != made["key"]
    assert app.client.get("/api/tags", headers=bearer(made["key"])).status_code == 401
    assert app.client.get("/api/tags", headers=bearer(r.json()["key"])).status_code == 200
    users = app.client.get("/admin/users", headers=h).json()["users"]
    assert {u["name"] for u in users} >= {"root", "carol"}
    r = app.client.patch(f"/admin/users/{carol}", json={"disabled": True}, headers=h)
    assert r.status_code == 200 and r.json()["disabled"] is True
    assert app.client.get("/api/tags", headers=bearer(r.json() and made["key"])).status_code == 401
    bad = app.client.post("/admin/keys", json={"user": "carol", "scopes": ["nope"]}, headers=h)
    assert bad.status_code == 400 and "unknown scope" in bad.json()["error"]["message"]
    user_key = key_for(app, make_user(app, "dave"))
    assert app.client.get("/admin/users", headers=bearer(user_key)).status_code == 403


def test_concurrent_checks_of_one_credential_ask_the_database_once(app: App) -> None:
    import asyncio

    user = make_user(app)
    key = key_for(app, user)
    asked: list[str] = []
    real = app.access.repo.key

    async def counting(key_id: str) -> Any:
        asked.append(key_id)
        return await real(key_id)

    app.access.repo.key = counting  # type: ignore[method-assign]

    async def many() -> list[Any]:
        return await asyncio.gather(*(app.access.authenticate(key, None) for _ in range(20)))

    principals = app.client.portal.call(many)  # type: ignore[attr-defined]
    assert len(asked) == 1 and {p.id for p in principals} == {principals[0].id}
