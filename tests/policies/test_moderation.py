"""Moderation, in process around a fake backend: flagged prompts refused in each API's
shape, flagged replies ended with ``content_filter`` (the official clients see it),
``/v1/moderations`` parsed by the openai SDK's types, word lists matched in one pass."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ollama
import pytest
from openai import OpenAI
from openai.types import ModerationCreateResponse

from llmux.policies.moderation import CATEGORIES, ListModerator
from llmux.policies.settings import ModerationSettings
from llmux.policies.wordlist import WordList
from tests.support.fakes import FakeBackend
from tests.support.inprocess import BASE, App, in_process

WORDS = {"violence": ["kill them", "杀人"], "illicit": ["make a bomb"]}


def on(**overrides: Any) -> dict[str, Any]:
    return {"moderation": ModerationSettings(enabled=True, words=WORDS, **overrides)}


def openai(app: App) -> OpenAI:
    return OpenAI(base_url=BASE + "/v1", api_key="unused", http_client=app.client, max_retries=0)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_a_flagged_prompt_is_refused_in_each_apis_shape(tmp_path: Path) -> None:
    with in_process(tmp_path, **on()) as app:
        r = app.client.post(
            "/api/chat", json={"model": "fake", "messages": user("how to MAKE A BOMB?")}
        )
        assert r.status_code == 400 and "illicit" in r.json()["error"]
        o = app.client.post(
            "/v1/chat/completions", json={"model": "fake", "messages": user("我要杀人")}
        )
        assert o.status_code == 400
        err = o.json()["error"]
        assert err["code"] == "content_filter" and err["param"] == "violence"
        d = app.client.post("/completions", json={"model": "fake", "prompt": "kill them all"})
        assert d.status_code == 400 and d.json()["error"]["code"] == "content_filter"
        assert not app.backend.calls_of("chat")
        ok = app.client.post(
            "/api/chat", json={"model": "fake", "messages": user("skill themes"), "stream": False}
        )
        assert ok.status_code == 200  # whole words only: "kill them" is not in "skill themes"


def test_a_flagged_reply_ends_the_stream_with_content_filter(tmp_path: Path) -> None:
    with in_process(tmp_path, **on()) as app:
        app.backend.reply("Sure. ", "First you ", "make a ", "bo", "mb with", " more text")
        stream = openai(app).chat.completions.create(model="fake", messages=user("hi"), stream=True)
        chunks = []
        with pytest.raises(Exception, match="moderation"):  # the final error event
            for c in stream:
                chunks.append(c)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert "bomb" not in text and "more text" not in text
        assert text.startswith("Sure. ")
        finishes = [
            c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
        ]
        assert finishes == ["content_filter"]


def test_a_flagged_non_streamed_reply_is_cut_with_content_filter(tmp_path: Path) -> None:
    with in_process(tmp_path, **on()) as app:
        app.backend.reply("好的，", "先去", "杀", "人吧", "。")
        whole = openai(app).chat.completions.create(model="fake", messages=user("hi"))
        assert whole.choices[0].finish_reason == "content_filter"
        assert "杀人" not in (whole.choices[0].message.content or "")
        native = ollama.Client(host=BASE)
        native._client = app.client
        app.backend.reply("好的，", "先去", "杀", "人吧", "。")
        reply = native.chat(model="fake", messages=user("hi"))
        assert reply.done_reason == "content_filter"
        assert "杀人" not in (reply.message.content or "")
        app.backend.reply("好的，", "先去", "杀", "人吧", "。")
        lines = app.client.post("/api/chat", json={"model": "fake", "messages": user("hi")}).text
        last = [json.loads(x) for x in lines.splitlines()]
        assert last[-2]["done_reason"] == "content_filter" and "error" in last[-1]


def test_a_clean_reply_passes_unchanged(tmp_path: Path) -> None:
    with in_process(tmp_path, **on(replies=True)) as app:
        app.backend.reply("Paris ", "is the capital", " of France.")
        stream = openai(app).chat.completions.create(model="fake", messages=user("hi"), stream=True)
        parts = [c.choices[0].delta.content or "" for c in stream if c.choices]
        assert "".join(parts) == "Paris is the capital of France."


def test_the_moderations_endpoint_parses_with_the_sdk_types(tmp_path: Path) -> None:
    with in_process(tmp_path, **on(patterns={"self-harm": [r"(?i)hurt\s+myself"]})) as app:
        client = openai(app)
        got = client.moderations.create(
            input=["I want to kill them", "a nice day", "I will hurt  myself"]
        )
        assert isinstance(got, ModerationCreateResponse)
        flags = [r.flagged for r in got.results]
        assert flags == [True, False, True]
        assert got.results[0].categories.violence is True
        assert got.results[0].categories.hate is False
        assert got.results[0].category_scores.violence == 1.0
        assert got.results[2].categories.self_harm is True
        one = client.moderations.create(input="make a bomb", model="omni-moderation-latest")
        assert one.model == "omni-moderation-latest" and one.results[0].categories.illicit is True
        raw = app.client.post("/v1/moderation", json={"input": "杀人"}).json()
        assert set(CATEGORIES) <= set(raw["results"][0]["categories"])
        parts = [
            {"type": "text", "text": "kill them"},
            {"type": "image_url", "image_url": {"url": "x"}},
        ]
        assert app.client.post("/v1/moderations", json={"input": parts}).json()["results"][0][
            "flagged"
        ]
        bad = app.client.post("/v1/moderations", json={"input": []})
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
        assert app.client.post("/v1/moderations", json={}).status_code == 400


def test_word_lists_find_whole_ascii_words_and_any_chinese(tmp_path: Path) -> None:
    lists = {"a": ["ass", "bad word"], "b": ["坏人", "坏"]}
    found = WordList(lists).find("Class is a BAD WORD, ass! 他是坏人")
    assert [(n, s, e) for n, s, e in found] == [("a", 11, 19), ("a", 21, 24), ("b", 28, 30)]


def test_the_regex_fallback_finds_what_the_automaton_finds(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    lists = {"x": ["he", "hers", "his", "she", "她们", "们"], "y": ["ush"]}
    text = "ushers say his and hers, she 她们 他们"
    fast = WordList(lists).find(text)
    real_import = builtins.__import__

    def no_ahocorasick(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "ahocorasick":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ahocorasick)
    slow = WordList(lists)
    assert slow._automaton is None
    assert slow.find(text) == fast


def test_a_large_list_is_one_pass() -> None:
    words = [f"w{i:05d}" for i in range(20000)]
    moderator = ListModerator(ModerationSettings(words={"hate": words}))
    assert moderator.check("nothing w19999 here").categories == {"hate"}
    assert not moderator.check("w200000 is not a listed word").flagged


def test_a_word_split_across_chunks_never_reaches_the_client(tmp_path: Path) -> None:
    with in_process(tmp_path, **on()) as app:
        app.backend.reply("ok ", "kil", "l th", "em", " now")
        r = app.client.post("/api/chat", json={"model": "fake", "messages": user("hi")})
        lines = [json.loads(x) for x in r.text.splitlines()]
        text = "".join(x.get("message", {}).get("content", "") for x in lines)
        assert "kill them" not in text and "now" not in text
        assert any(x.get("done_reason") == "content_filter" for x in lines)


def judged(**overrides: Any) -> dict[str, Any]:
    settings = ModerationSettings(enabled=True, judge_model="judge", **overrides)
    return {"moderation": settings}


def judge_backend() -> FakeBackend:
    return FakeBackend(model_names=("fake:latest", "judge:latest"))


def test_a_judge_model_refuses_what_it_flags(tmp_path: Path) -> None:
    with in_process(tmp_path, backend=judge_backend(), **judged()) as app:
        app.backend.reply('{"flagged": ["harassment", "not-a-category"]}')
        r = app.client.post(
            "/v1/chat/completions", json={"model": "fake", "messages": user("you idiot")}
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "harassment"
        asked = app.backend.calls_of("chat")
        assert len(asked) == 1  # the judge only: nothing was generated
        question = asked[0].args[0]
        assert question.model == "judge:latest" and question.sampling.temperature == 0
        assert "you idiot" in question.messages[0].content
        assert question.format["properties"]["flagged"]["items"]["enum"] == list(CATEGORIES)
        assert asked[0].ctx is not None and asked[0].ctx.route == "/internal/moderation-judge"
        app.backend.reply('{"flagged": []}')
        app.backend.reply("Fine", ".")
        ok = app.client.post(
            "/api/chat", json={"model": "fake", "messages": user("hello"), "stream": False}
        )
        assert ok.status_code == 200 and ok.json()["message"]["content"] == "Fine."


def test_a_failing_judge_fails_closed(tmp_path: Path) -> None:
    with in_process(tmp_path, backend=judge_backend(), **judged()) as app:
        app.backend.reply("this is not JSON")
        r = app.client.post("/api/chat", json={"model": "fake", "messages": user("hello")})
        assert r.status_code == 503 and "judge failed" in r.json()["error"]
        app.backend.reply(error=RuntimeError("judge crashed"))
        o = app.client.post(
            "/v1/chat/completions", json={"model": "fake", "messages": user("hello")}
        )
        assert o.status_code == 503 and o.json()["error"]["code"] == "policy_failed"
        assert len(app.backend.calls_of("chat")) == 2  # two questions, no generation


def test_the_endpoint_asks_the_judge_after_the_lists(tmp_path: Path) -> None:
    with in_process(tmp_path, backend=judge_backend(), **judged(words=WORDS)) as app:
        app.backend.reply('{"flagged": ["self-harm/intent"]}')
        got = openai(app).moderations.create(input=["make a bomb", "I feel hopeless"])
        assert got.results[0].categories.illicit and not got.results[0].categories.self_harm_intent
        assert got.results[1].categories.self_harm_intent and got.results[1].flagged
        assert len(app.backend.calls_of("chat")) == 1  # the listed word needed no model


def test_the_judge_sees_redacted_text(tmp_path: Path) -> None:
    from llmux.policies.settings import RedactionSettings

    redaction = RedactionSettings(enabled=True)
    with in_process(tmp_path, backend=judge_backend(), redaction=redaction, **judged()) as app:
        app.backend.reply('{"flagged": []}')
        r = app.client.post(
            "/api/chat",
            json={"model": "fake", "messages": user("call 13800138000"), "stream": False},
        )
        assert r.status_code == 200
        question, generation = (c.args[0] for c in app.backend.calls_of("chat"))
        assert (
            "13800138000" not in question.messages[0].content
            and "[PHONE_1]" in question.messages[0].content
        )
        assert generation.messages[0].content == "call [PHONE_1]"


def test_the_judges_question_is_not_counted_against_the_callers_limits(tmp_path: Path) -> None:
    from llmux.config import LimitsSettings

    limits = LimitsSettings(concurrent_requests=1, requests_per_minute=1)
    with in_process(
        tmp_path, backend=judge_backend(), quotas=True, limits=limits, **judged()
    ) as app:
        app.backend.reply('{"flagged": []}')
        r = app.client.post(
            "/api/chat", json={"model": "fake", "messages": user("hi"), "stream": False}
        )
        assert r.status_code == 200, r.text  # one request: the judge's took no lease or unit
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
