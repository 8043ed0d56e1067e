"""The web UI's sessions: login sets an HttpOnly, SameSite=Lax cookie and a CSRF token;
changes made with the cookie need the token; logout, idle expiry and a disabled user
end the session; wrong passwords are throttled."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.auth.test_access import call, make_user
from tests.support.inprocess import App, in_process

PASSWORD = "correct horse battery"  # make_user's


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    with in_process(tmp_path, auth={"mode": "on", "max_failures": 1000}) as app:
        yield app


def login(app: App, name: str = "alice", password: str = PASSWORD) -> str:
    r = app.client.post("/auth/login", json={"name": name, "password": password})
    assert r.status_code == 200, r.text
    return str(r.json()["csrf_token"])


def test_login_sets_a_safe_cookie_and_a_csrf_token(app: App) -> None:
    make_user(app)
    r = app.client.post("/auth/login", json={"name": "alice", "password": PASSWORD})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    cookies = r.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("llmux_session="))
    csrf = next(c for c in cookies if c.startswith("llmux_csrf="))
    assert "HttpOnly" in session and "SameSite=lax" in session and "Path=/" in session
    assert "HttpOnly" not in csrf
    assert PASSWORD not in r.text
    me = app.client.get("/auth/me").json()
    assert me["kind"] == "user" and me["name"] == "alice" and "admin" not in me["scopes"]


def test_changes_with_the_cookie_need_the_csrf_token(app: App) -> None:
    make_user(app)
    csrf = login(app)
    assert app.client.get("/api/conversations").status_code == 200
    r = app.client.post("/api/conversations", json={"title": "t"})
    assert r.status_code == 403 and "CSRF" in r.json()["error"]
    r = app.client.post("/api/conversations", json={"title": "t"},
                        headers={"X-CSRF-Token": "wrong"})  # fmt: skip
    assert r.status_code == 403
    r = app.client.post("/api/conversations", json={"title": "t"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201


def test_logout_ends_the_session(app: App) -> None:
    make_user(app)
    csrf = login(app)
    cookie = app.client.cookies.get("llmux_session")
    assert app.client.post("/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    assert app.client.get("/api/conversations").status_code == 401
    app.client.cookies.set("llmux_session", cookie or "")  # the old cookie, replayed
    r = app.client.get("/api/conversations")
    assert r.status_code == 401 and "session has ended" in r.json()["error"]


def test_wrong_passwords_are_refused_and_throttled(tmp_path: Path) -> None:
    with in_process(tmp_path, auth={"mode": "on", "max_failures": 3}) as app:
        make_user(app)
        for _ in range(3):
            r = app.client.post("/auth/login", json={"name": "alice", "password": "guess " * 3})
            assert r.status_code == 401 and "guess" not in r.text
        r = app.client.post("/auth/login", json={"name": "alice", "password": PASSWORD})
        assert r.status_code == 429


def test_idle_sessions_and_disabled_users_end(tmp_path: Path) -> None:
    auth = {"mode": "on", "session_idle_s": 1, "cache_s": 0}
    with in_process(tmp_path, auth=auth) as app:
        alice = make_user(app)
        login(app)
        assert app.client.get("/api/conversations").status_code == 200
        time.sleep(1.2)
        assert app.client.get("/api/conversations").status_code == 401
    with in_process(tmp_path / "again", auth={"mode": "on", "cache_s": 0}) as app:
        alice = make_user(app)
        login(app)
        call(app, app.access.update_user, alice.id, disabled=True)
        assert app.client.get("/api/conversations").status_code == 401
