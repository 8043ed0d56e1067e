"""The audit trail in the real app (in process, fake backend, real SQLite, the spool
in the test's home): a record for every model API, with the keyed hash of the very
bytes sent and of the reply; refusals, errors and flags; administrative actions
(never their passwords); the admin API's filters, errors, paging and export."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmux.audit.record import ReplyMac, prompt_hash
from llmux.audit.verify import verify_export
from llmux.auth.scopes import ADMIN_SCOPES
from llmux.auth.secrets import Keyring, load_master
from llmux.core.chunks import ChatChunk
from llmux.errors import BackendError
from llmux.policies.settings import ModerationSettings, RedactionSettings
from tests.support.inprocess import App, in_process

USER = [{"role": "user", "content": "hi there"}]
EMBED = {"model": "fake", "input": ["one", "two"]}
CALLS: list[tuple[str, str, dict[str, Any]]] = [
    ("ollama", "/api/chat", {"model": "fake", "messages": USER, "stream": False}),
    ("ollama", "/api/chat", {"model": "fake", "messages": USER}),
    ("ollama", "/api/generate", {"model": "fake", "prompt": "hi", "stream": False}),
    ("ollama", "/api/embed", EMBED),
    ("ollama", "/api/embeddings", {"model": "fake", "prompt": "one"}),
    ("openai", "/v1/chat/completions", {"model": "fake", "messages": USER}),
    ("openai", "/v1/chat/completions", {"model": "fake", "messages": USER, "stream": True}),
    ("openai", "/v1/completions", {"model": "fake", "prompt": "hi"}),
    ("openai", "/v1/embeddings", EMBED),
    ("deepseek", "/chat/completions", {"model": "fake", "messages": USER, "stream": True}),
    ("deepseek", "/completions", {"model": "fake", "prompt": "hi"}),
    ("deepseek", "/beta/completions", {"model": "fake", "prompt": "def f(", "suffix": ")"}),
    ("deepseek", "/beta/chat/completions", {"model": "fake", "messages": USER}),
    ("deepseek", "/embeddings", EMBED),
]


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    with in_process(tmp_path, audit=True) as app:
        yield app


def records(app: App, **filters: Any) -> list[dict[str, Any]]:
    r = app.client.get("/admin/audit", params={"limit": 1000, **filters})
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def one(app: App, request_id: str) -> dict[str, Any]:
    found = records(app, request_id=request_id)
    assert len(found) == 1, found
    return found[0]


def key(app: App) -> bytes:
    return Keyring(load_master(None, app.settings.home_dir)).audit


@pytest.mark.parametrize(("api", "path", "body"), CALLS, ids=[f"{c[0]}{c[1]}" for c in CALLS])
def test_every_model_api_leaves_a_record(
    app: App, api: str, path: str, body: dict[str, Any]
) -> None:
    sent = json.dumps(body).encode()
    r = app.client.post(path, content=sent, headers={"X-Request-Id": "rid-1",
                                                     "Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 200, r.text
    rec = one(app, "rid-1")
    assert (rec["kind"], rec["api"], rec["route"], rec["method"]) == ("model", api, path, "POST")
    assert rec["model"] == "fake" and rec["served"] == "fake:latest" and rec["status"] == 200
    assert rec["prompt_hash"] == prompt_hash(key(app), sent), "the bytes as sent, keyed"
    assert rec["response_hash"] and rec["error"] is None and rec["client_ip"] == "testclient"
    assert rec["prompt_tokens"] > 0 and rec["latency_us"] > 0 and rec["ts"].endswith("Z")
    assert rec["operation"] == ("embed" if "embed" in path else "chat")
    if "embed" not in path:
        assert rec["completion_tokens"] == 2 and rec["ttft_us"] is not None
    assert rec["stream"] == bool(body.get("stream", api == "ollama" and "chat" in path))


def test_the_reply_hash_is_the_keyed_hash_of_the_text(app: App) -> None:
    app.backend.reply("The ", "answer")
    r = app.client.post("/api/chat", json={"model": "fake", "messages": USER, "stream": False},
                        headers={"X-Request-Id": "rid-2"})  # fmt: skip
    assert r.json()["message"]["content"] == "The answer"
    mac = ReplyMac(key(app))
    mac.feed(ChatChunk(content="The answer"))
    assert one(app, "rid-2")["response_hash"] == mac.hexdigest()


def test_errors_and_the_chain(app: App) -> None:
    app.backend.reply("Hel", "lo", error=BackendError("the model broke"), error_after=1)
    r = app.client.post("/v1/chat/completions", json={"model": "fake", "messages": USER,
                        "stream": True}, headers={"X-Request-Id": "mid-stream"})  # fmt: skip
    assert "the model broke" in r.text
    rec = one(app, "mid-stream")
    assert (rec["status"], rec["error"]) == (200, "backend_error"), "a 200 that ended in error"
    app.backend.reply(error=BackendError("no"), error_after=0)
    r = app.client.post("/v1/chat/completions", json={"model": "fake", "messages": USER},
                        headers={"X-Request-Id": "at-once"})  # fmt: skip
    assert r.status_code == 500
    assert (one(app, "at-once")["status"], one(app, "at-once")["error"]) == (500, "backend_error")
    report = app.client.get("/admin/audit/verify").json()
    assert report["ok"] and report["replicas"][0]["rows"] >= 2


def test_refusals_and_flags_are_recorded(tmp_path: Path) -> None:
    guard = {"redaction": RedactionSettings(enabled=True),
             "moderation": ModerationSettings(enabled=True, words={"violence": ["kill them"]})}  # fmt: skip
    with in_process(tmp_path, audit=True, quotas=True, limits={"requests_per_minute": 2},
                    **guard) as app:  # fmt: skip
        mail = [{"role": "user", "content": "write to li.lei@example.com"}]
        ok = app.client.post("/api/chat", json={"model": "fake", "messages": mail,
                             "stream": False}, headers={"X-Request-Id": "pii"})  # fmt: skip
        assert ok.status_code == 200
        bad = [{"role": "user", "content": "kill them all"}]
        flagged = app.client.post("/api/chat", json={"model": "fake", "messages": bad},
                                  headers={"X-Request-Id": "flagged"})  # fmt: skip
        assert flagged.status_code == 400
        limited = app.client.post("/api/chat", json={"model": "fake", "messages": USER},
                                  headers={"X-Request-Id": "limited"})  # fmt: skip
        assert limited.status_code == 429
        assert one(app, "pii")["redactions"] == {"email": 1}
        assert one(app, "pii")["moderation"] == "allowed"
        rec = one(app, "flagged")
        assert (rec["status"], rec["error"], rec["moderation"]) == (400, "content_filter",
                                                                  "flagged")  # fmt: skip
        rec = one(app, "limited")
        assert (rec["status"], rec["refused"]) == (429, "rate_limit")


def test_a_spool_that_cannot_be_written_refuses_model_requests(app: App) -> None:
    assert app.audit is not None
    app.audit.spool.failing = "No space left on device"
    r = app.client.post("/v1/chat/completions", json={"model": "fake", "messages": USER})
    assert r.status_code == 503 and r.json()["error"]["code"] == "policy_failed"
    assert "audit" in r.json()["error"]["message"]
    app.audit.spool.failing = None
    assert app.client.post("/v1/chat/completions", json={"model": "fake",
                           "messages": USER}).status_code == 200  # fmt: skip


def test_filters_paging_errors_and_export(app: App) -> None:
    for i in range(7):
        app.client.post("/v1/chat/completions", json={"model": "fake", "messages": USER},
                        headers={"X-Request-Id": f"page-{i}"})  # fmt: skip
    app.client.post("/v1/embeddings", json=EMBED)
    page = app.client.get("/admin/audit", params={"limit": 3, "kind": "model"}).json()
    got = [r["request_id"] for r in page["data"]]
    while page["next_cursor"]:
        page = app.client.get("/admin/audit", params={"limit": 3, "kind": "model",
                              "cursor": page["next_cursor"]}).json()  # fmt: skip
        got += [r["request_id"] for r in page["data"]]
    assert len(got) == 8 and got[1:][::-1][:7] == [f"page-{i}" for i in range(7)]
    assert len(records(app, status="2xx", kind="model")) == 8
    assert records(app, status="500-599") == []
    assert len(app.client.get("/v1/audit", params={"model": "fake:latest"}).json()["data"]) >= 8
    for params, param in [({"since": "yesterday"}, "since"), ({"status": "2x"}, "status"),
                          ({"limit": "0"}, "limit"), ({"cursor": "nope"}, "cursor"),
                          ({"since": "2026-12-02", "until": "2026-12-01"}, "since"),
                          ({"format": "csv"}, "format")]:  # fmt: skip
        r = app.client.get("/v1/audit", params=params)
        error = r.json()["error"]
        assert r.status_code == 400 and error["param"] == param, (params, r.text)
        assert set(error) == {"message", "type", "param", "code"}
    export = app.client.get("/admin/audit/export")
    assert export.headers["content-type"].startswith("application/x-ndjson")
    lines = export.content.splitlines()
    assert len(lines) >= 8 and verify_export(lines).ok
    assert app.client.get("/admin/audit", params={"format": "jsonl"}).content.count(b"\n") >= 8
    status = app.client.get("/admin/audit/status").json()
    assert status["seq"] >= 8 and status["failing"] is None


# ---- administrative actions ---------------------------------------------------------------


def call(app: App, fn: Any, *args: Any, **kwargs: Any) -> Any:
    async def go() -> Any:
        return await fn(*args, **kwargs)

    return app.client.portal.call(go)  # type: ignore[attr-defined]


def test_admin_actions_are_recorded_without_their_secrets(tmp_path: Path) -> None:
    with in_process(tmp_path, audit=True, auth={"mode": "on"}) as app:
        admin = call(app, app.access.add_user, "root", "the admin password", "admin")
        _, admin_key = call(app, app.access.create_key, admin, scopes=ADMIN_SCOPES)
        as_admin = {"Authorization": f"Bearer {admin_key}"}
        made = app.client.post("/api/keys", json={"name": "ci"}, headers=as_admin)
        assert made.status_code == 201, made.text
        key_id = made.json()["id"]
        user = app.client.post("/admin/users", headers=as_admin,
                               json={"name": "bob", "password": "bobs secret password"})  # fmt: skip
        assert user.status_code == 201, user.text
        gone = app.client.delete(f"/api/keys/{key_id}", headers=as_admin)
        assert gone.status_code == 204
        bob = call(app, app.access.user, "bob")
        _, bob_key = call(app, app.access.create_key, bob)
        denied = app.client.post("/admin/users", json={"name": "eve", "password": "x" * 12},
                                 headers={"Authorization": f"Bearer {bob_key}"})  # fmt: skip
        assert denied.status_code == 403
        assert app.client.get("/v1/audit", headers={"Authorization": f"Bearer {bob_key}"}
                              ).status_code == 403  # fmt: skip
        r = app.client.get("/v1/audit", params={"kind": "admin", "limit": 50}, headers=as_admin)
        assert r.status_code == 200, r.text
        actions = {(a["operation"], a["status"]): a for a in r.json()["data"]}
        create = actions[("POST /api/keys", 201)]
        assert create["target"] == {"name": "ci"} and create["principal_user"] == admin.id
        assert create["principal_kind"] == "key" and create["client_ip"] == "testclient"
        assert actions[("DELETE /api/keys/{key_id}", 204)]["target"] == {"key_id": key_id}
        assert actions[("POST /admin/users", 201)]["target"] == {"name": "bob"}
        assert ("POST /admin/users", 403) in actions, "a refused attempt is recorded too"
        assert actions[("POST /admin/users", 403)]["error"] == "insufficient_scope"
        spooled = b"".join(p.read_bytes() for p in (tmp_path / "audit").rglob("spool-*"))
        assert b"secret password" not in spooled and admin_key.encode() not in spooled


def test_a_websocket_turn_and_a_conversation_reply_are_recorded(app: App) -> None:
    with app.client.websocket_connect("ws://127.0.0.1:11434/api/chat/ws") as ws:
        ws.send_json({"turn": "t1", "request": {"model": "fake", "messages": USER}})
        while not ws.receive_json().get("done"):
            pass
    conv = app.client.post("/api/conversations", json={"model": "fake"}).json()
    said = app.client.post(f"/api/conversations/{conv['id']}/messages",
                           json={"content": "hello", "stream": False},
                           headers={"X-Request-Id": "conv-1"})  # fmt: skip
    assert said.status_code == 200, said.text
    found = records(app, kind="model")
    ws_rec = next(r for r in found if r["route"] == "/api/chat/ws")
    assert ws_rec["method"] == "WEBSOCKET" and ws_rec["status"] == 200
    assert ws_rec["prompt_hash"] and ws_rec["completion_tokens"] == 2, "hashed from messages"
    conv_rec = one(app, "conv-1")
    assert conv_rec["route"].startswith("/api/conversations/") and conv_rec["prompt_hash"]


def test_with_wait_for_fsync_a_response_ends_after_its_record_is_on_disk(tmp_path: Path) -> None:
    audit = {"wait_for_fsync": True, "fsync_s": 30}  # only a waiting response makes it flush
    with in_process(tmp_path, audit=audit, auth={"mode": "on"}) as app:
        assert app.audit is not None
        spool = app.audit.spool
        for path, body in (("/api/chat", {"model": "fake", "messages": USER}),
                           ("/v1/chat/completions", {"model": "fake", "messages": USER})):  # fmt: skip
            admin = call(app, app.access.add_user, f"u{len(path)}", "a long password", "admin")
            _, token = call(app, app.access.create_key, admin, scopes=ADMIN_SCOPES)
            r = app.client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200
            assert spool.synced_seq == spool.seq, "the record was fsync'd before the end"
        made = app.client.post("/api/keys", json={"name": "x"},
                               headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        assert made.status_code == 201 and spool.synced_seq == spool.seq
