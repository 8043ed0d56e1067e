"""The reasoning splitter: tags cut anywhere never leak into either side."""

from __future__ import annotations

import pytest

from llmux.core.reasoning import ReasoningSplitter

TEXT = "<think>\nLet me count: 1, 2.\n</think>\n\nThe answer is 2."


def run(pieces: list[str], *, thinking_first: bool = False) -> tuple[str, str, list[str]]:
    s = ReasoningSplitter(thinking_first=thinking_first)
    thinking, content, order = "", "", []
    for piece in pieces:
        t, c = s.feed(piece)
        thinking, content = thinking + t, content + c
        order += ["t"] * bool(t) + ["c"] * bool(c)
    t, c = s.flush()
    return thinking + t, content + c, order


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 100])
def test_any_cut_gives_the_same_split(size: int) -> None:
    pieces = [TEXT[i : i + size] for i in range(0, len(TEXT), size)]
    thinking, content, order = run(pieces)
    assert thinking == "Let me count: 1, 2.\n", "leading whitespace of the trace is dropped"
    assert content == "The answer is 2."
    assert order == sorted(order, key=lambda k: k != "t"), "thinking never follows content"


def test_template_opened_think_block() -> None:
    thinking, content, _ = run(["I think", " so</th", "ink>", "Yes."], thinking_first=True)
    assert (thinking, content) == ("I think so", "Yes.")


def test_answer_without_thinking_is_content() -> None:
    assert run(["Hello", " <think> is a tag"])[:2] == ("", "Hello <think> is a tag")


def test_unclosed_trace_stays_thinking() -> None:
    assert run(["<think>still going</thi"])[:2] == ("still going</thi", "")


def test_partial_open_tag_then_plain_text() -> None:
    assert run(["<thi", "s is text"])[:2] == ("", "<this is text")
