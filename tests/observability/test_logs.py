"""Structured logs: a real ``llmux serve`` with access control, JSON logs at debug level
and the bundled model, whose captured stderr holds neither the API key nor the personal
data a request carried, one parsed JSON object per line, one request line per request
with its fields and the request's id; ``log_bodies`` shows prompts and replies
redacted. In process (the real app around a fake backend, logging through llmux's own
formatters): the text lines, the non-model request line without its query string,
error statuses, the secret mask and what ``configure`` sets."""

from __future__ import annotations

import io
import json
import logging
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from llmux.observability import logs
from llmux.observability.logs import JsonFormatter, TextFormatter, mask_secrets
from tests.auth.test_replicas import cli
from tests.conftest import MODEL, Server, start_server
from tests.support.inprocess import in_process

PHONE = "13812345678"
EMAIL = "li.lei@example.com"
WRONG = "sk-llmux-0123456789ab_" + secrets.token_urlsafe(32)
REQUEST_FIELDS = {
    "principal", "principal_id", "api", "route", "operation", "model", "served", "backend",
    "upstream", "stream", "status", "error", "finish_reason", "prompt_tokens",
    "completion_tokens", "cached_tokens", "latency_ms", "ttft_ms", "cache", "refused",
    "redactions", "moderation", "client",
}  # fmt: skip


def prompt(key: str) -> str:
    return f"My mail is {EMAIL}, my mobile {PHONE}, my key {key}. Say ok."


def serve(home: Path, **env: str) -> tuple[Server, str]:
    """A server with access control on and an inference key for the admin."""
    base = {
        "LLMUX_AUTH__MODE": "on",
        "LLMUX_AUTH__SECRET": secrets.token_urlsafe(32),
        "LLMUX_AUTH__ADMIN_PASSWORD": "logs admin password",
        "LLMUX_SERVER__LOG_LEVEL": "debug",
    }
    server = start_server(home, extra_env={**base, **env})
    return server, cli(server, "keys", "create", "--user", "admin", "--scopes", "inference")


def parsed(text: str) -> list[dict[str, Any]]:
    """Every line of the log as a JSON object (a line that is not one fails)."""
    out = []
    for line in text.splitlines():
        if line.strip():
            record = json.loads(line)
            assert {"timestamp", "level", "logger", "message", "request_id"} <= set(record)
            assert record["timestamp"].endswith("Z")
            out.append(record)
    return out


@pytest.mark.model
def test_a_request_with_pii_and_a_key_leaves_neither_in_any_log_line(tmp_path: Path) -> None:
    server, key = serve(tmp_path, LLMUX_SERVER__LOG_FORMAT="json")
    bearer = {"Authorization": f"Bearer {key}"}
    try:
        with server.client() as http:
            r = http.post(
                "/v1/chat/completions",
                headers={**bearer, "X-Request-Id": "logs-chat"},
                json={"model": MODEL, "max_tokens": 6,
                      "messages": [{"role": "user", "content": prompt(key)}]},
            )  # fmt: skip
            assert r.status_code == 200, r.text
            body = {"model": MODEL, "messages": [{"role": "user", "content": prompt(key)}],
                    "options": {"num_predict": 4}}  # fmt: skip
            with http.stream("POST", "/api/chat", json=body,
                             headers={**bearer, "X-Request-Id": "logs-stream"}) as r:  # fmt: skip
                assert r.status_code == 200
                assert list(r.iter_lines())
            missing = {"model": "no-such-model", "messages": [{"role": "user", "content": EMAIL}]}
            r = http.post("/api/chat", json=missing,
                          headers={**bearer, "X-Request-Id": "logs-404"})  # fmt: skip
            assert r.status_code == 404
            r = http.get(f"/api/tags?api_key={key}",
                         headers={"Authorization": f"Bearer {WRONG}", "X-Request-Id": "logs-wrong"})  # fmt: skip
            assert r.status_code == 401
            r = http.get("/api/tags", headers={"x-api-key": WRONG, "X-Request-Id": "logs-x-key"})
            assert r.status_code == 401
    finally:
        server.stop()
    text = server.log.read_text()
    for secret in (key, key.split("_", 1)[1], WRONG, WRONG.split("_", 1)[1], EMAIL, PHONE):
        assert secret not in text
    records = parsed(text)
    lines = {r["request_id"]: r for r in records if r["logger"] in ("llmux.access", "llmux.http")}
    assert all(r["request_id"] != "-" for r in lines.values())
    chat = lines["logs-chat"]
    assert chat["logger"] == "llmux.access" and set(chat) >= REQUEST_FIELDS
    assert chat["status"] == 200 and chat["error"] is None and chat["api"] == "openai"
    assert chat["route"] == "/v1/chat/completions" and chat["model"] == MODEL
    assert chat["backend"] == "local" and chat["principal_id"]
    assert chat["prompt_tokens"] > 0 and 0 < chat["completion_tokens"] <= 6
    assert chat["latency_ms"] >= chat["ttft_ms"] > 0 and chat["stream"] is False
    stream = lines["logs-stream"]
    assert stream["api"] == "ollama" and stream["stream"] is True and stream["status"] == 200
    assert (lines["logs-404"]["status"], lines["logs-404"]["error"]) == (404, "model_not_found")
    wrong = lines["logs-wrong"]
    assert wrong["logger"] == "llmux.http" and wrong["status"] == 401
    assert wrong["route"] == "/api/tags" and "api_key" not in json.dumps(wrong)
    assert lines["logs-x-key"]["status"] == 401
    # one line per request, and a line a request's own work logs carries its id
    ours = [r for r in records if r["request_id"].startswith("logs-")]
    requests_logged = [r for r in ours if r["logger"] in ("llmux.access", "llmux.http")]
    assert len(requests_logged) == 5
    loaded = [r for r in records if r["message"].startswith(f"loaded {MODEL}")]
    assert [r["request_id"] for r in loaded] == ["logs-chat"]  # the first request loaded it
    assert not any(r["logger"].startswith("llmux.bodies") for r in records)  # off by default


@pytest.mark.model
def test_log_bodies_shows_the_prompts_and_replies_redacted(tmp_path: Path) -> None:
    """[server] log_bodies with [redaction] off: the scrubber is on anyway."""
    server, key = serve(tmp_path, LLMUX_SERVER__LOG_BODIES="true")
    try:
        with server.client() as http:
            r = http.post(
                "/api/chat",
                headers={"Authorization": f"Bearer {key}", "X-Request-Id": "bodies-1"},
                json={"model": MODEL, "stream": False, "options": {"num_predict": 4},
                      "messages": [{"role": "user", "content": prompt(key)}]},
            )  # fmt: skip
            assert r.status_code == 200, r.text
    finally:
        server.stop()
    text = server.log.read_text()
    for secret in (key, key.split("_", 1)[1], EMAIL, PHONE):
        assert secret not in text
    bodies = [line for line in text.splitlines() if "llmux.bodies" in line]
    caller = next(line for line in bodies if "llmux.bodies.requests" in line and "prompt" in line)
    assert "[bodies-1]" in caller and "[EMAIL]" in caller and "[PHONE]" in caller
    assert key.split("_", 1)[0] + "_***" in caller  # the key's id, never its secret
    assert any("llmux.bodies.requests" in line and "reply 0" in line for line in bodies)
    engine = text[text.index("llmux.bodies.engine [bodies-1]") :]  # the rendered prompt ...
    engine = engine[: engine.index("\n20")]  # ... over several lines, to the next record
    assert "[EMAIL]" in engine and "[PHONE]" in engine and "<|im_start|>user" in engine


# -- in process ------------------------------------------------------------------------


@contextmanager
def capture(formatter: logging.Formatter, level: int = logging.INFO) -> Iterator[io.StringIO]:
    """A root handler with one of llmux's formatters, the root at ``level``; added
    before an app starts, so the app's log filter goes on it too."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    saved = root.level
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(saved)
        logs.install(bodies=False)


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    with capture(TextFormatter()) as stream:
        yield stream


def test_text_lines_carry_the_fields_as_key_value(tmp_path: Path, captured: io.StringIO) -> None:
    stream = captured
    with in_process(tmp_path) as app:
        r = app.client.post(
            "/v1/chat/completions",
            headers={"X-Request-Id": "text-1"},
            json={"model": "fake:latest", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 200
        r = app.client.get("/api/tags?key=sk-llmux-0123456789ab_secretsecretsecret",
                           headers={"X-Request-Id": "text-2"})  # fmt: skip
        assert r.status_code == 200
        r = app.client.post("/api/chat", headers={"X-Request-Id": "text-3"},
                            json={"model": "nope", "messages": [{"role": "user", "content": "x"}]})  # fmt: skip
        assert r.status_code == 404
    lines = stream.getvalue().splitlines()
    chat = next(line for line in lines if "[text-1]" in line and "llmux.access" in line)
    assert "chat fake:latest 200 principal=anonymous api=openai route=/v1/chat/completions" in chat
    for part in ("backend=fake", "stream=no", "status=200", "prompt_tokens=1",
                 "completion_tokens=2", "finish_reason=stop", "latency_ms="):  # fmt: skip
        assert part in chat
    assert "upstream=" not in chat and "error=" not in chat  # unset fields are left out
    tags = [line for line in lines if "[text-2]" in line]
    assert len(tags) == 1 and "llmux.http" in tags[0] and "GET /api/tags 200" in tags[0]
    assert "secret" not in tags[0] and "route=/api/tags " in tags[0]
    missing = next(line for line in lines if "[text-3]" in line)
    assert "status=404 error=model_not_found" in missing


def test_bodies_only_with_log_bodies_and_then_redacted(tmp_path: Path) -> None:
    key = "sk-llmux-0123456789ab_" + "k" * 40
    body = {"model": "fake:latest", "messages": [{"role": "user", "content": prompt(key)}]}
    with capture(JsonFormatter(), logging.DEBUG) as stream:
        with in_process(tmp_path / "off") as app:
            assert app.client.post("/v1/chat/completions", json=body).status_code == 200
        assert "llmux.bodies" not in stream.getvalue()
        with in_process(tmp_path / "on", server={"log_bodies": True}) as app:
            app.backend.reply("write to ", EMAIL)
            r = app.client.post("/v1/chat/completions", json=body, headers={"X-Request-Id": "b"})
            assert r.status_code == 200 and EMAIL in r.text  # the reply itself is untouched
    text = stream.getvalue()
    assert EMAIL not in text and PHONE not in text and "k" * 40 not in text
    bodies = [r for r in parsed(text) if r["logger"] == "llmux.bodies.requests"]
    assert [r["request_id"] for r in bodies] == ["b", "b"]
    assert bodies[0]["message"] == (
        "fake:latest prompt: user: My mail is [EMAIL], my mobile [PHONE], my key "
        "sk-llmux-0123456789ab_***. Say ok."
    )
    assert bodies[1]["message"] == "fake:latest reply 0: write to [EMAIL]"


def test_json_fields_are_scrubbed_with_redaction_on(tmp_path: Path) -> None:
    """A model named like a phone number: its request line is masked, message and fields."""
    with (
        capture(JsonFormatter()) as stream,
        in_process(tmp_path, redaction={"enabled": True}) as app,
    ):
        r = app.client.post(
            "/api/chat", json={"model": f"x{PHONE}", "messages": [{"role": "user", "content": "x"}]}
        )
        assert r.status_code == 404
    line = next(r for r in parsed(stream.getvalue()) if r["logger"] == "llmux.access")
    assert line["model"] == "x[PHONE]:latest" and line["message"] == "chat x[PHONE]:latest 404"
    assert PHONE not in stream.getvalue()


def test_the_secret_mask() -> None:
    key = "sk-llmux-0123456789ab_" + "A1b2" * 10
    cases = {
        f"key {key} end": "key sk-llmux-0123456789ab_*** end",
        "Authorization: Bearer abc.def": "Authorization: Bearer ***",
        '"authorization": "Basic dXNlcjpwYXNz"': '"authorization": "Basic ***"',
        "x-api-key: not-an-llmux-key": "x-api-key: ***",
        "GET /api/tags?api_key=abc&x=1": "GET /api/tags?api_key=***&x=1",
        "LLMUX_AUTH__ADMIN_PASSWORD=hunter2 next": "LLMUX_AUTH__ADMIN_PASSWORD=*** next",
        "upstream key sk-proj-abcdefghijklmnop": "upstream key sk-***",
        "token eyJhbGciOi.eyJzdWIiOi.c2ln": "token eyJ***",
        # ordinary text stays as it is
        "a basic configuration; the bearer of news": "a basic configuration; the bearer of news",
        "prompt_tokens=5 completion_tokens=3": "prompt_tokens=5 completion_tokens=3",
    }
    for given, expected in cases.items():
        assert mask_secrets(given) == expected


def test_a_traceback_is_masked_and_stays_below_the_line() -> None:
    record = logging.LogRecord("llmux.x", logging.ERROR, __file__, 1, "failed %s", ("now",), None)
    try:
        raise ValueError("Authorization: Bearer sk-llmux-0123456789ab_" + "z" * 40)
    except ValueError:
        record.exc_info = sys.exc_info()
    record.request_id = "r1"
    record.fields = {"status": 500}
    text = TextFormatter().format(record)
    assert text.splitlines()[0].endswith("[r1]: failed now status=500")
    assert "z" * 40 not in text and "Traceback" in text
    out = json.loads(JsonFormatter().format(record))
    assert out["status"] == 500 and "z" * 40 not in out["exception"]


def test_configure_levels_and_format() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("llmux").level
    stream = io.StringIO()
    try:
        logs.configure("debug", "json", stream=stream)
        assert root.level == logging.INFO  # libraries: info at most
        assert logging.getLogger("llmux").level == logging.DEBUG
        assert logging.getLogger(logs.BODIES).getEffectiveLevel() > logging.CRITICAL
        assert not logs.plain_stderr()  # llama.cpp's raw debug lines stay off
        logging.getLogger("llmux.test").debug("hello %s", "there")
        logging.getLogger("aiosqlite").debug("executing SELECT with secret parameters")
        with pytest.raises(ValueError, match="unknown log level"):
            logs.configure("chatty")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("llmux").setLevel(saved[2])
        logs.install(bodies=False)
    records = parsed(stream.getvalue())
    assert [(r["logger"], r["message"]) for r in records] == [("llmux.test", "hello there")]


def test_the_access_log_can_be_turned_off(tmp_path: Path, captured: io.StringIO) -> None:
    stream = captured
    with in_process(tmp_path, server={"access_log": False}) as app:
        assert app.client.get("/api/tags").status_code == 200
        r = app.client.post(
            "/api/chat",
            json={
                "model": "fake:latest",
                "stream": False,
                "messages": [{"role": "user", "content": "x"}],
            },
        )
        assert r.status_code == 200
    assert "llmux.access" not in stream.getvalue() and "llmux.http" not in stream.getvalue()


def test_uvicorn_lines_go_through_the_same_handler(tmp_path: Path) -> None:
    """``llmux serve`` gives uvicorn no logging config of its own and no access log."""
    done = subprocess.run(
        [sys.executable, "-c", (
            "import logging, uvicorn.config as c\n"
            "from llmux.observability import logs\n"
            "logs.configure('info', 'json')\n"
            "c.Config(app=None, log_config=None, access_log=False).configure_logging()\n"
            "logging.getLogger('uvicorn.error').info('Started')\n"
            "logging.getLogger('uvicorn.access').info('GET /?key=1')\n"
        )],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    records = parsed(done.stderr)
    assert [(r["logger"], r["message"]) for r in records] == [("uvicorn.error", "Started")]


def test_the_pii_filter_fails_closed() -> None:
    """A redactor that raises withholds the line; the logging call still returns."""
    from llmux.policies.redaction import WITHHELD, ScrubLogs
    from llmux.policies.redactor import Redactor
    from llmux.policies.settings import RedactionSettings

    class Broken(Redactor):
        def scrub(self, text: str) -> str:
            raise RuntimeError("recogniser broke")

    record = logging.LogRecord("llmux.x", logging.INFO, __file__, 1, "call %s", (PHONE,), None)
    record.fields = {"model": PHONE}
    assert ScrubLogs(Broken(RedactionSettings(enabled=True))).filter(record)
    assert record.getMessage() == WITHHELD and record.fields == {}
