"""Continuous batching, seen from clients: streams run together, sampling state is per
sequence, disconnects free their slot, deadlines and context shifts behave.

These run the real engine with the bundled model over loopback HTTP, driven by the
official ``openai`` and ``ollama`` clients.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ollama
import pytest
from openai import OpenAI

from tests.conftest import MODEL, Server, cancelled_counts, running_server

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def client(server: Server) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)


def stream_chat(
    client: OpenAI, prompt: str | list[Any], marks: dict[str, float] | None = None, **kw: Any
) -> str:
    """Stream one chat reply; note when its first token and its end arrived."""
    marks = {} if marks is None else marks
    text = ""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    stream = client.chat.completions.create(model=MODEL, messages=messages, stream=True, **kw)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            marks.setdefault("first", time.monotonic())
            text += chunk.choices[0].delta.content
    marks["end"] = time.monotonic()
    return text


def run_together(jobs: list[tuple[str, dict[str, Any]]], client: OpenAI) -> list[tuple[str, dict[str, float]]]:  # fmt: skip
    """Send all jobs at once (a barrier releases them together); results in job order."""
    start = threading.Barrier(len(jobs))

    def work(prompt: str, kw: dict[str, Any]) -> tuple[str, dict[str, float]]:
        marks: dict[str, float] = {}
        start.wait()
        return stream_chat(client, prompt, marks, **kw), marks

    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(work, prompt, kw) for prompt, kw in jobs]
        return [f.result(timeout=300) for f in futures]


def test_eight_streams_all_start_before_any_finishes(client: OpenAI, no_eos: dict[str, int]) -> None:  # fmt: skip
    jobs = [
        (f"Tell me a long story about animal number {i}.", {"max_tokens": 48, "logit_bias": no_eos})
        for i in range(8)
    ]
    results = run_together(jobs, client)
    first_tokens = [marks["first"] for _, marks in results]
    ends = [marks["end"] for _, marks in results]
    assert all(text for text, _ in results)
    assert max(first_tokens) < min(ends), "a request waited for another one to finish"


def test_identical_seeded_requests_in_one_batch_match(client: OpenAI) -> None:
    same = {"max_tokens": 40, "temperature": 1.0, "seed": 1234}
    jobs = [("Invent a name for a new planet and describe it.", same)] * 2 + [
        (f"Count to {n} in words.", {"max_tokens": 30, "temperature": 0.9, "seed": n})
        for n in (3, 5, 7, 9)
    ]
    results = run_together(jobs, client)
    (a, a_marks), (b, b_marks) = results[0], results[1]
    # they really overlapped: each started before the other ended
    assert a_marks["first"] < b_marks["end"] and b_marks["first"] < a_marks["end"]
    assert a and a == b


def test_multi_turn_chat_reuses_the_history(server: Server) -> None:
    chat = ollama.Client(host=server.url)
    history = [
        {
            "role": "system",
            "content": f"[{time.time_ns()}] " + "You answer briefly and kindly. " * 40,
        }
    ]
    evaluated = []
    for question in ("Hi!", "What is 3 + 4?", "And 5 + 6?", "Thanks, bye."):
        history.append({"role": "user", "content": question})
        reply = chat.chat(MODEL, messages=history, options={"temperature": 0, "num_predict": 12})
        history.append({"role": "assistant", "content": reply.message.content or ""})
        evaluated.append(reply.prompt_eval_count or 0)
    first, later = evaluated[0], evaluated[1:]
    assert first > 256, "turn 1 evaluates the whole system prompt"
    assert all(n < first / 3 for n in later), f"later turns re-evaluated the history: {evaluated}"


def test_context_shifts_when_num_predict_asks_for_more(server: Server, no_eos: dict[str, int]) -> None:  # fmt: skip
    client = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)
    small = {"options": {"num_ctx": 256}}
    shifted = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Write a very long poem."}],
        max_tokens=400, logit_bias=no_eos, extra_body=small,
    )  # fmt: skip
    assert shifted.usage is not None and shifted.usage.completion_tokens == 400
    assert shifted.choices[0].finish_reason == "length"
    unlimited = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Write a very long poem."}],
        logit_bias=no_eos, extra_body=small,
    )  # fmt: skip
    assert unlimited.usage is not None and unlimited.usage.completion_tokens < 256
    assert unlimited.choices[0].finish_reason == "length"


# -- one slot, short deadline -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_slot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from running_server(
        tmp_path_factory,
        "one-slot",
        {"LLMUX_ENGINE__NUM_PARALLEL": "1", "LLMUX_ENGINE__REQUEST_TIMEOUT": "4"},
    )


def test_disconnect_stops_generation_and_frees_the_slot(one_slot: Server, no_eos: dict[str, int]) -> None:  # fmt: skip
    client = OpenAI(base_url=one_slot.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=1)  # fmt: skip
    before = len(cancelled_counts(one_slot))
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Write a very long essay."}],
        max_tokens=3000, logit_bias=no_eos, stream=True,
    )  # fmt: skip
    for i, _ in enumerate(stream):
        if i == 5:
            break
    stream.close()
    deadline = time.monotonic() + 30
    while len(cancelled_counts(one_slot)) == before and time.monotonic() < deadline:
        time.sleep(0.1)
    counts = cancelled_counts(one_slot)[before:]
    assert counts and counts[0] < 3000, "generation went on after the client left"
    # the only slot is free again: the next request is served
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3)  # fmt: skip
    assert reply.choices[0].message.content is not None


def test_deadline_ends_a_stream_with_an_error(one_slot: Server, no_eos: dict[str, int]) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Write a very long essay."}],
        "max_tokens": 3000,
        "logit_bias": no_eos,
        "stream": True,
    }
    with one_slot.client() as http:
        events = [
            line.removeprefix("data: ")
            for line in http.post("/v1/chat/completions", json=body).iter_lines()
            if line.startswith("data: ")
        ]
    assert len(events) > 3, "tokens streamed before the deadline"
    assert '"error"' in events[-1] and "deadline" in events[-1]


# -- flash attention off: output independent of batching and of the cache --------------------
@pytest.fixture(scope="module")
def exact(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from running_server(
        tmp_path_factory,
        "exact",
        {"LLMUX_ENGINE__NUM_PARALLEL": "4", "LLMUX_ENGINE__FLASH_ATTENTION": "false"},
    )


def test_prefix_copied_from_a_busy_slot_gives_the_solo_text(exact: Server, no_eos: dict[str, int]) -> None:  # fmt: skip
    client = OpenAI(base_url=exact.url + "/v1", api_key="unused", max_retries=0, timeout=300)
    system = f"[{time.time_ns()}] " + "You are a tutor for a school class; explain simply. " * 12

    def ask(question: str, **kw: Any) -> Any:
        return client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
            **kw,
        )

    poem = {"max_tokens": 40, "temperature": 1.0, "seed": 5, "logit_bias": no_eos}
    solo = ask("Write a short poem about the sea.", **poem)
    assert solo.usage is not None and solo.usage.prompt_tokens_details is not None
    assert solo.usage.prompt_tokens_details.cached_tokens == 0

    marks: dict[str, float] = {}
    with ThreadPoolExecutor(1) as pool:
        # another user with the same system prompt keeps a slot busy (it takes the slot
        # that holds the prompt); the poem request then gets that prefix copied
        essay_messages = [
            {"role": "system", "content": system},
            {"role": "user", "content": "Write an essay."},
        ]
        essay = pool.submit(
            stream_chat, client, essay_messages, marks, max_tokens=200, logit_bias=no_eos
        )
        while "first" not in marks and not essay.done():
            time.sleep(0.05)
        batched = ask("Write a short poem about the sea.", **poem)
        essay.result(timeout=300)
    assert batched.usage is not None and batched.usage.prompt_tokens_details is not None
    assert batched.usage.prompt_tokens_details.cached_tokens >= 128, "prefix not reused"
    assert batched.choices[0].message.content == solo.choices[0].message.content
