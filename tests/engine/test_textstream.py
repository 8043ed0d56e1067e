"""Incremental UTF-8: a character cut off by the end of generation is dropped, never
sent as U+FFFD; stop strings never leak."""

from __future__ import annotations

import pytest

from llmux.engine.batch import Request
from llmux.engine.jobs import DoneEvent, Job, ResolvedSampling
from llmux.engine.textstream import StopMatcher, Utf8Stream
from tests.engine.test_scheduler import Reply, make_loop


def test_a_split_character_is_held_until_complete() -> None:
    stream = Utf8Stream()
    data = "感".encode()
    assert stream.feed(data[:1]) == "" and stream.feed(data[1:]) == "感"
    assert stream.flush() == ""


def test_an_incomplete_last_character_is_dropped() -> None:
    stream = Utf8Stream()
    assert stream.feed("好感".encode()[:-1]) == "好"
    assert stream.flush() == ""


def test_a_stop_string_split_across_pieces_never_leaks() -> None:
    stops = StopMatcher(["<END>"])
    assert stops.feed("ab<E") + stops.feed("ND>cd") == "ab" and stops.stopped


@pytest.mark.model
def test_num_predict_cutting_a_character_never_ends_in_a_replacement_char() -> None:
    loop = make_loop(1)
    try:
        prompt = "<|im_start|>user\n请用中文写一首关于秋天的诗。<|im_end|>\n<|im_start|>assistant\n"
        cuts = 0
        for n in range(1, 13):
            reply = Reply()
            job = Job(prompt, ResolvedSampling(num_predict=n, temperature=0), return_context=True)
            loop.submit(Request(job, reply.emit, reply.cancel))
            assert reply.done.wait(120)
            end = reply.end
            assert isinstance(end, DoneEvent) and end.context is not None
            produced = end.context[len(end.context) - end.metrics.completion_tokens :]
            try:
                loop.model.detokenize(list(produced)).decode("utf-8")
            except UnicodeDecodeError:
                cuts += 1  # this limit cut a character in two
            assert "\ufffd" not in reply.text, (n, reply.text)
        assert cuts, "no limit cut a character; the test proves nothing"
    finally:
        loop.close()
