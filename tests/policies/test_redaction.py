"""The PII redaction policy, in process around a fake backend: what the backend sees,
what the client gets back (each API, streaming and not, through the official clients),
refusals, placeholders that turn back, replies redacted as they stream, fail-closed,
stored history, log lines and per-key settings."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import ollama
import pytest
from openai import OpenAI

from llmux.core.request import ChatRequest
from llmux.policies.redaction import ScrubLogs
from llmux.policies.redactor import Pseudonyms, Redactor, ReplyText
from llmux.policies.settings import RedactionSettings
from tests.support.inprocess import BASE, App, in_process

PHONE = "13800138000"
ID = "11010519491231002X"
EMAIL = "li.lei@example.com"
PROMPT = f"我的手机号是{PHONE}，身份证{ID}, mail {EMAIL}."


def on(**overrides: Any) -> dict[str, Any]:
    return {"redaction": RedactionSettings(enabled=True, **overrides)}


def openai(app: App) -> OpenAI:
    return OpenAI(base_url=BASE + "/v1", api_key="unused", http_client=app.client, max_retries=0)


def seen(app: App) -> ChatRequest:
    request = app.backend.calls_of("chat")[-1].args[0]
    assert isinstance(request, ChatRequest)
    return request


def chat(app: App, content: str, **extra: Any) -> Any:
    body = {"model": "fake", "messages": [{"role": "user", "content": content}], **extra}
    return app.client.post("/api/chat", json={"stream": False, **body})


def test_the_backend_sees_placeholders_and_the_same_value_the_same_one(tmp_path: Path) -> None:
    with in_process(tmp_path, **on()) as app:
        r = chat(app, PROMPT + f" again: {PHONE}; other 139 0013 8000")
        assert r.status_code == 200, r.text
        text = seen(app).messages[0].content
        assert PHONE not in text and ID not in text and EMAIL not in text
        assert "139 0013 8000" not in text
        assert text.count("[PHONE_1]") == 2 and "[PHONE_2]" in text
        assert "[ID_CARD_1]" in text and "[EMAIL_1]" in text
        assert text.startswith("我的手机号是[PHONE_1]，身份证[ID_CARD_1]")


def test_every_text_of_a_request_is_redacted(tmp_path: Path) -> None:
    with in_process(tmp_path, **on()) as app:
        messages = [
            {"role": "system", "content": f"user phone {PHONE}"},
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "call", "arguments": {"to": PHONE}}}],
            },
            {"role": "tool", "content": f"called {PHONE}", "tool_name": "call"},
        ]
        r = app.client.post(
            "/api/chat", json={"model": "fake", "messages": messages, "stream": False}
        )
        assert r.status_code == 200, r.text
        request = seen(app)
        assert PHONE not in repr(request.messages)
        assert request.messages[2].tool_calls[0].arguments == {"to": "[PHONE_1]"}
        g = app.client.post(
            "/api/generate",
            json={"model": "fake", "prompt": f"x {PHONE}", "suffix": EMAIL, "stream": False},
        )
        assert g.status_code == 200
        assert seen(app).prompt == "x [PHONE_1]" and seen(app).suffix == "[EMAIL_1]"
        e = app.client.post("/api/embed", json={"model": "fake", "input": [f"a {PHONE}", "b"]})
        assert e.status_code == 200
        embedded = app.backend.calls_of("embed")[-1].args[0]
        assert embedded.inputs == ("a [PHONE_1]", "b")


def test_a_blocked_type_is_refused_in_each_apis_shape_naming_the_type(tmp_path: Path) -> None:
    with in_process(tmp_path, **on(actions={"id_card": "block"})) as app:
        r = chat(app, PROMPT)
        assert r.status_code == 400
        assert "id_card" in r.json()["error"] and ID not in r.text
        o = app.client.post(
            "/v1/chat/completions",
            json={
                "model": "fake",
                "messages": [{"role": "user", "content": PROMPT}],
                "stream": True,
            },
        )
        assert o.status_code == 400
        err = o.json()["error"]
        assert err["code"] == "pii_detected" and err["param"] == "id_card"
        assert err["type"] == "invalid_request_error" and ID not in o.text
        assert not app.backend.calls_of("chat")  # nothing reached the backend
        assert chat(app, f"phone only {PHONE}").status_code == 200  # masked, not blocked


def test_placeholders_turn_back_into_the_values_in_every_api_and_mode(tmp_path: Path) -> None:
    with in_process(tmp_path, **on(action="pseudonymize")) as app:
        pieces = ("Call ", "[PHO", "NE_1", "] or ", "[EMAIL_1]", ", id [ID_CARD_1].")
        want = f"Call {PHONE} or {EMAIL}, id {ID}."
        client = openai(app)
        app.backend.reply(*pieces)
        whole = client.chat.completions.create(
            model="fake", messages=[{"role": "user", "content": PROMPT}]
        )
        assert whole.choices[0].message.content == want
        app.backend.reply(*pieces)
        stream = client.chat.completions.create(
            model="fake", messages=[{"role": "user", "content": PROMPT}], stream=True
        )
        parts = [c.choices[0].delta.content or "" for c in stream if c.choices]
        assert "".join(parts) == want
        assert not any("[" in p for p in parts)  # no placeholder half went out
        native = ollama.Client(host=BASE)
        native._client = app.client
        app.backend.reply(*pieces)
        got = "".join(
            p.message.content or ""
            for p in native.chat(
                model="fake", messages=[{"role": "user", "content": PROMPT}], stream=True
            )
        )
        assert got == want
        app.backend.reply(*pieces)
        gen = native.generate(model="fake", prompt=PROMPT)
        assert gen.response == want
        assert PHONE not in (seen(app).prompt or "")


def test_values_the_model_writes_are_masked_as_the_reply_streams(tmp_path: Path) -> None:
    with in_process(tmp_path, **on()) as app:
        app.backend.reply("你好，", "请拨打 ", "138", " 0013", " 8000", " 或写信。")
        r = app.client.post(
            "/api/chat",
            json={"model": "fake", "messages": [{"role": "user", "content": "hi"}]},
        )
        lines = [json.loads(x) for x in r.text.splitlines()]
        parts = [x["message"]["content"] for x in lines if not x["done"]]
        assert parts[0] == "你好，"  # a start with nothing to hold goes out at once
        text = "".join(parts)
        assert text == "你好，请拨打 [PHONE_1] 或写信。"
        assert "138" not in text and "8000" not in text
        assert lines[-1]["done"] is True


def test_a_redactor_failure_blocks_the_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with in_process(tmp_path, **on()) as app:

        def broken(self: Redactor, text: str) -> Any:
            raise RuntimeError("recogniser broke")

        monkeypatch.setattr(Redactor, "find", broken)
        r = chat(app, PROMPT)
        assert r.status_code == 503 and "redactor failed" in r.json()["error"]
        o = app.client.post(
            "/v1/chat/completions",
            json={"model": "fake", "messages": [{"role": "user", "content": "x"}]},
        )
        assert o.status_code == 503 and o.json()["error"]["code"] == "policy_failed"
        assert not app.backend.calls_of("chat")


def test_a_reply_side_failure_ends_the_stream_with_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with in_process(tmp_path, **on()) as app:
        app.backend.reply("one, ", "two ", "three")
        feed = ReplyText.feed

        def broken(self: ReplyText, text: str) -> str:
            if text != "one, ":  # the first piece goes out, the second breaks
                raise RuntimeError("broke mid-stream")
            return feed(self, text)

        monkeypatch.setattr(ReplyText, "feed", broken)
        r = app.client.post(
            "/v1/chat/completions",
            json={"model": "fake", "messages": [{"role": "user", "content": "x"}], "stream": True},
        )
        events = [line for line in r.text.splitlines() if line.startswith("data: ")]
        assert r.status_code == 200 and '"one, "' in events[1]
        assert "policy_failed" in events[-1]  # the stream ends with the error event
        assert "two" not in r.text


def test_history_stores_the_redacted_text(tmp_path: Path) -> None:
    with in_process(tmp_path, **on(action="pseudonymize")) as app:
        conv = app.client.post("/api/conversations", json={"model": "fake"}).json()
        app.backend.reply("noted: ", "[PHONE_1].")
        r = app.client.post(
            f"/api/conversations/{conv['id']}/messages",
            json={"content": f"my phone {PHONE}", "stream": False},
        )
        assert r.status_code == 200, r.text
        assert PHONE in r.text  # the caller gets its value back ...
        stored = app.client.get(f"/api/conversations/{conv['id']}").json()
        contents = [m["content"] for m in stored["messages"]]
        assert contents == ["my phone [PHONE]", "noted: [PHONE]."]  # ... the store never has it
        assert PHONE not in json.dumps(stored)


def test_log_lines_are_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    scrub = ScrubLogs(Redactor(RedactionSettings(enabled=True)))
    logger = logging.getLogger("tests.redaction")
    handler = logging.Handler()
    records: list[logging.LogRecord] = []
    handler.emit = records.append  # type: ignore[method-assign]
    handler.addFilter(scrub)
    logger.addHandler(handler)
    try:
        logger.warning("could not reach %s for %s", PHONE, EMAIL)
        logger.warning("nothing here %d", 5)
    finally:
        logger.removeHandler(handler)
    assert records[0].getMessage() == "could not reach [PHONE] for [EMAIL]"
    assert records[1].getMessage() == "nothing here 5"


def test_settings_per_key_override_the_defaults(tmp_path: Path) -> None:
    overrides = {"anonymous": {"actions": {"phone": "block"}}}
    with in_process(tmp_path, **on(keys=overrides)) as app:
        assert chat(app, f"call {PHONE}").status_code == 400
    with in_process(tmp_path / "b", **on(keys={"someone-else": {"enabled": False}})) as app:
        assert chat(app, f"call {PHONE}").status_code == 200
        assert "[PHONE_1]" in seen(app).messages[0].content


def test_a_bad_setting_fails_when_the_server_is_built(tmp_path: Path) -> None:
    from llmux.errors import LlmuxError

    with (
        pytest.raises(LlmuxError, match="redaction"),
        in_process(tmp_path, **on(patterns={"x": "(("})),
    ):
        pass
    with (
        pytest.raises(LlmuxError, match="unknown"),
        in_process(tmp_path, **on(kinds=["phone", "passport"])),
    ):
        pass


def test_word_lists_and_operator_patterns(tmp_path: Path) -> None:
    words = tmp_path / "names.txt"
    words.write_text("# staff\n张三\nJohn Doe\n")
    s = RedactionSettings(
        enabled=True, word_files={"name": words}, patterns={"employee": r"EMP-\d{6}"}
    )
    names = Pseudonyms.new(Redactor(s))
    assert (
        names.redact("张三和john doe, EMP-123456, EMP-12")
        == "[NAME_1]和[NAME_2], [EMPLOYEE_1], EMP-12"
    )


def streamed(names: Pseudonyms, text: str, step: int) -> str:
    stream = ReplyText(names)
    out = [stream.feed(text[i : i + step]) for i in range(0, len(text), step)]
    out.append(stream.flush())
    return "".join(out)


@pytest.mark.parametrize("step", [1, 2, 3, 5, 8])
def test_a_stream_cut_anywhere_redacts_as_the_whole_text_does(step: int) -> None:
    s = RedactionSettings(enabled=True, words={"name": ["张三丰", "Smith"]})
    text = (
        f"电话{PHONE}，卡号 6222 0212 3456 7890 128，邮箱 [EMAIL_1]；mr Smith, "
        f"IP 10.1.2.3 和 2001:db8::1，张三丰, code 91350100M000100Y43 ok"
    )
    whole = Pseudonyms.new(Redactor(s)).reply(text)
    out = streamed(Pseudonyms.new(Redactor(s)), text, step)
    assert out == whole
    for value in (PHONE, "7890", "10.1.2.3", "2001:db8", "张三丰", "Smith", "91350100M"):
        assert value not in out


@pytest.mark.parametrize("step", [1, 2, 3, 5, 8])
def test_an_email_the_model_writes_is_masked_from_its_first_character_past_letters(
    step: int,
) -> None:
    """A run of letters goes out at once (so a reply starting with a word starts at
    once); an address is masked from the first character that is not a letter."""
    names = Pseudonyms.new(Redactor(RedactionSettings(enabled=True)))
    out = streamed(names, "write to lei2024@example.com or li.lei@mail.example.cn now", step)
    assert "@" not in out and "example" not in out and "2024" not in out
    assert out.endswith(" now") and out.count("[EMAIL_") == 2


def test_a_value_the_model_writes_stays_masked_even_when_pseudonymised(tmp_path: Path) -> None:
    with in_process(tmp_path, **on(action="pseudonymize")) as app:
        app.backend.reply("yours is [PHONE_1]; ", "mine is 139 0013 8000", ".")
        r = chat(app, f"my phone {PHONE}")
        assert r.json()["message"]["content"] == f"yours is {PHONE}; mine is [PHONE_2]."
