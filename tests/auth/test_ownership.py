"""Conversations belong to who made them: user A cannot read, search, export, change or
delete user B's (and B not A's) through the API; admins see all only when allowed;
conversations from before access control go to the first admin."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.auth.test_access import bearer, key_for, make_user
from tests.support.inprocess import App, in_process


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    with in_process(tmp_path, auth={"mode": "on", "max_failures": 1000}) as app:
        yield app


def start(app: App, key: str, title: str) -> str:
    r = app.client.post("/api/conversations", json={"title": title, "model": "fake"},
                        headers=bearer(key))  # fmt: skip
    assert r.status_code == 201, r.text
    cid = str(r.json()["id"])
    r = app.client.post(f"/api/conversations/{cid}/messages",
                        json={"content": f"{title} secret words", "stream": False},
                        headers=bearer(key))  # fmt: skip
    assert r.status_code == 200, r.text
    return cid


def refused_everything(app: App, key: str, cid: str) -> None:
    h = bearer(key)
    base = f"/api/conversations/{cid}"
    assert app.client.get(base, headers=h).status_code == 404
    assert app.client.get(base + "/export", headers=h).status_code == 404
    assert app.client.get(base + "/export?format=json", headers=h).status_code == 404
    assert app.client.patch(base, json={"title": "mine now"}, headers=h).status_code == 404
    r = app.client.post(base + "/messages", json={"content": "hi", "stream": False}, headers=h)
    assert r.status_code == 404
    assert app.client.post(base + "/regenerate", headers=h).status_code == 404
    assert app.client.delete(base, headers=h).status_code == 404


def listed(app: App, key: str, query: str = "") -> set[str]:
    r = app.client.get("/api/conversations", params={"q": query}, headers=bearer(key))
    assert r.status_code == 200
    return {c["id"] for c in r.json()["conversations"]}


def test_users_see_only_their_own_both_ways(app: App) -> None:
    a_key = key_for(app, make_user(app, "alice"))
    b_key = key_for(app, make_user(app, "bob"))
    a_conv, b_conv = start(app, a_key, "alpha"), start(app, b_key, "bravo")
    refused_everything(app, b_key, a_conv)
    refused_everything(app, a_key, b_conv)
    assert listed(app, a_key) == {a_conv} and listed(app, b_key) == {b_conv}
    assert listed(app, a_key, "secret") == {a_conv} and listed(app, b_key, "secret") == {b_conv}
    assert listed(app, a_key, "bravo") == set()
    # each still has their own, untouched
    r = app.client.get(f"/api/conversations/{a_conv}", headers=bearer(a_key))
    assert r.status_code == 200 and r.json()["title"] == "alpha"
    assert len(r.json()["messages"]) == 2


def test_a_users_other_keys_share_their_conversations(app: App) -> None:
    alice = make_user(app, "alice")
    first, second = key_for(app, alice), key_for(app, alice)
    cid = start(app, first, "shared")
    assert listed(app, second) == {cid}


def test_admins_see_all_only_when_the_setting_says_so(tmp_path: Path) -> None:
    for see_all in (False, True):
        home = tmp_path / str(see_all)
        auth = {"mode": "on", "admins_see_all": see_all}
        with in_process(home, auth=auth) as app:
            user_key = key_for(app, make_user(app, "alice"))
            # admin powers need a credential with the admin scope, not just an admin's key
            admin_key = key_for(
                app, make_user(app, "root", "admin"), scopes=frozenset({"admin", "conversations"})
            )
            cid = start(app, user_key, "private")
            assert listed(app, admin_key) == ({cid} if see_all else set())
            status = app.client.get(f"/api/conversations/{cid}", headers=bearer(admin_key))
            assert status.status_code == (200 if see_all else 404)


def test_conversations_from_before_go_to_the_first_admin(tmp_path: Path) -> None:
    with in_process(tmp_path) as app:  # access control off
        r = app.client.post("/api/conversations", json={"title": "old notes"})
        old = r.json()["id"]
    auth = {"mode": "on", "admin_password": "the admin password"}
    with in_process(tmp_path, auth=auth) as app:
        admin = app.client.portal.call(app.access.user, "admin")  # type: ignore[attr-defined]
        assert listed(app, key_for(app, admin)) == {old}
        assert listed(app, key_for(app, make_user(app, "alice"))) == set()
