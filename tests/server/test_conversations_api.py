"""The conversations API over real HTTP, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import MODEL, Server, start_server

FAST = {"num_predict": 8, "temperature": 0, "seed": 1}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, dict[str, str]]]:
    """A home directory and the environment that picks the database."""
    env = {"LLMUX_ENGINE__KEEP_ALIVE": "30m"}
    if request.param == "postgresql":
        env["LLMUX_STORAGE__DATABASE_URL"] = request.getfixturevalue("pg_url")
    yield tmp_path_factory.mktemp(f"conv-{request.param}"), env


@pytest.fixture(scope="module")
def srv(backend: tuple[Path, dict[str, str]]) -> Iterator[Server]:
    home, env = backend
    server = start_server(home, extra_env=env)
    yield server
    server.stop()


@pytest.fixture()
def api(srv: Server) -> Iterator[httpx.Client]:
    with srv.client() as c:
        yield c


def create(api: httpx.Client, **body: str) -> dict:
    r = api.post("/api/conversations", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def stream_lines(api: httpx.Client, path: str, body: dict) -> list[dict]:
    with api.stream("POST", path, json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in r.iter_lines() if line]


def test_two_turns_are_stored_searched_exported_and_survive_a_crash(
    srv: Server, backend: tuple[Path, dict[str, str]], api: httpx.Client
) -> None:
    conv = create(api, model=MODEL, system="You are a terse assistant.")
    assert conv["title"] == "" and conv["message_count"] == 0
    cid = conv["id"]

    first = api.post(
        f"/api/conversations/{cid}/messages",
        json={"content": "Tell me about volcanoes\nin two words", "stream": False, "options": FAST},
    )
    assert first.status_code == 200, first.text
    one = first.json()
    assert one["done"] is True and one["message"]["role"] == "assistant"
    assert one["conversation_id"] == cid and isinstance(one["message_id"], int)

    lines = stream_lines(
        api, f"/api/conversations/{cid}/messages", {"content": "And glaciers?", "options": FAST}
    )
    assert all(not x["done"] for x in lines[:-1]) and lines[-1]["done"]
    assert lines[-1]["conversation_id"] == cid
    streamed = "".join(x["message"]["content"] for x in lines)

    stored = api.get(f"/api/conversations/{cid}").json()
    roles = [m["role"] for m in stored["messages"]]
    assert roles == ["user", "assistant", "user", "assistant"]
    assert stored["title"] == "Tell me about volcanoes"  # first line of the first message
    assert stored["messages"][1]["content"] == one["message"]["content"]
    assert stored["messages"][3]["content"] == streamed
    assert stored["messages"][3]["id"] == lines[-1]["message_id"]
    assert not any(m["partial"] for m in stored["messages"])

    # the history was assembled on the server: turn 2's prompt is exactly the whole
    # conversation, as counted by the OpenAI API for the same messages sent by hand
    by_hand = [{"role": "system", "content": "You are a terse assistant."}] + [
        {"role": m["role"], "content": m["content"]} for m in stored["messages"][:3]
    ]
    usage = api.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": by_hand, "max_tokens": 1}
    ).json()["usage"]
    assert stored["messages"][3]["usage"]["prompt_tokens"] == usage["prompt_tokens"]
    assert stored["messages"][1]["usage"]["prompt_tokens"] < usage["prompt_tokens"]

    found = api.get("/api/conversations", params={"q": "glacier"}).json()["conversations"]
    assert [c["id"] for c in found] == [cid] and "glacier" in found[0]["snippet"].lower()
    assert api.get("/api/conversations", params={"q": "volcano"}).json()["conversations"]

    md = api.get(f"/api/conversations/{cid}/export")
    assert md.status_code == 200 and md.headers["content-type"].startswith("text/markdown")
    assert "attachment" in md.headers["content-disposition"]
    assert md.text.startswith("# Tell me about volcanoes")
    assert "## You" in md.text and "And glaciers?" in md.text and "> You are a terse" in md.text
    exported = api.get(f"/api/conversations/{cid}/export", params={"format": "json"}).json()
    assert exported["messages"] == stored["messages"]

    # kill -9: whatever was committed is still there after a restart on the same home
    srv.stop(signal.SIGKILL)
    home, env = backend
    again = start_server(home, extra_env=env, port=int(srv.url.rsplit(":", 1)[1]))
    srv.proc = again.proc
    with again.client() as c:
        assert c.get(f"/api/conversations/{cid}").json()["messages"] == stored["messages"]
        assert [
            x["id"]
            for x in c.get("/api/conversations", params={"q": "glaciers"}).json()["conversations"]
        ] == [cid]


def test_a_reply_cut_by_a_disconnect_is_kept_as_partial(api: httpx.Client) -> None:
    cid = create(api, model=MODEL)["id"]
    body = {
        "content": "Write a very long story about a lighthouse.",
        "options": {"num_predict": 3000, "temperature": 0.8},
    }
    got = 0
    with api.stream("POST", f"/api/conversations/{cid}/messages", json=body) as r:
        for line in r.iter_lines():
            got += bool(line)
            if got >= 5:
                break  # closing the response drops the connection
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        msgs = api.get(f"/api/conversations/{cid}").json()["messages"]
        if len(msgs) == 2:
            break
        time.sleep(0.2)
    assert [m["role"] for m in msgs] == ["user", "assistant"]
    assert msgs[1]["partial"] is True and msgs[1]["done_reason"] is None
    assert 0 < len(msgs[1]["content"]) < 3000 * 8
    md = api.get(f"/api/conversations/{cid}/export").text
    assert "_(reply interrupted)_" in md


def test_regenerate_replaces_the_last_reply(api: httpx.Client) -> None:
    cid = create(api, model=MODEL)["id"]
    api.post(
        f"/api/conversations/{cid}/messages",
        json={"content": "Name a colour.", "stream": False, "options": FAST},
    )
    before = api.get(f"/api/conversations/{cid}").json()["messages"]
    r = api.post(
        f"/api/conversations/{cid}/regenerate",
        json={"stream": False, "options": {**FAST, "seed": 7, "temperature": 1}},
    )
    assert r.status_code == 200, r.text
    after = api.get(f"/api/conversations/{cid}").json()["messages"]
    assert [m["role"] for m in after] == ["user", "assistant"]
    assert after[0] == before[0] and after[1]["id"] == r.json()["message_id"] != before[1]["id"]
    # no user message to answer: 400
    empty = create(api, model=MODEL)["id"]
    assert api.post(f"/api/conversations/{empty}/regenerate").status_code == 400


def test_rename_model_switch_list_and_delete(api: httpx.Client) -> None:
    conv = create(api, title="  Draft  ")
    assert conv["title"] == "Draft" and conv["model"] == ""
    cid = conv["id"]
    renamed = api.patch(f"/api/conversations/{cid}", json={"title": "Final", "model": MODEL})
    assert renamed.status_code == 200 and renamed.json()["title"] == "Final"
    assert renamed.json()["model"] == MODEL
    listed = api.get("/api/conversations", params={"limit": 200}).json()["conversations"]
    assert listed[0]["id"] == cid  # most recently updated first
    assert api.delete(f"/api/conversations/{cid}").status_code == 204
    assert api.get(f"/api/conversations/{cid}").status_code == 404
    assert api.delete(f"/api/conversations/{cid}").status_code == 404


def test_bad_input_gets_clear_errors_and_stores_nothing(api: httpx.Client) -> None:
    bare = create(api)["id"]
    r = api.post(f"/api/conversations/{bare}/messages", json={"content": "hi"})
    assert r.status_code == 400 and "model" in r.json()["error"]
    r = api.post(f"/api/conversations/{bare}/messages", json={"content": "hi", "model": "nope:1b"})
    assert r.status_code == 404 and "nope" in r.json()["error"]
    r = api.post(f"/api/conversations/{bare}/messages", json={"content": "", "model": MODEL})
    assert r.status_code == 400
    r = api.post(
        f"/api/conversations/{bare}/messages",
        json={"content": "hi", "model": MODEL, "options": {"num_predict": "lots"}},
    )
    assert r.status_code == 400
    assert api.get(f"/api/conversations/{bare}").json()["messages"] == []  # nothing stored
    missing = "0" * 32
    for method, path in [
        ("GET", f"/api/conversations/{missing}"),
        ("PATCH", f"/api/conversations/{missing}"),
        ("GET", f"/api/conversations/{missing}/export"),
        ("POST", f"/api/conversations/{missing}/messages"),
    ]:
        r = api.request(method, path, json={"content": "x", "title": "t"})
        assert r.status_code == 404 and "not found" in r.json()["error"], (method, path)
    assert api.post("/api/conversations", json={"model": "nope:1b"}).status_code == 404
    assert api.post("/api/conversations", content=b"{not json").status_code == 400
    assert api.get("/api/conversations", params={"limit": 0}).status_code == 400
    r = api.get(f"/api/conversations/{bare}/export", params={"format": "pdf"})
    assert r.status_code == 400 and "markdown" in r.json()["error"]
