"""The stream wrapper ends a failing stream with that API's error line or event
(checklist N18); priming raises errors before the first chunk."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from llmux.core.chunks import ChatChunk
from llmux.errors import BackendError, ModelNotFound
from llmux.protocols.ollama.stream import chat_object
from llmux.server.streaming import encoded
from llmux.serving.reply import prime


async def failing(after: int, exc: Exception) -> AsyncIterator[ChatChunk]:
    for i in range(after):
        yield ChatChunk(content=f"part{i} ")
    raise exc


async def rendered(chunks: AsyncIterator[ChatChunk]) -> AsyncIterator[dict]:
    async for chunk in chunks:
        yield chat_object(chunk, "m")


async def lines_of(stream: AsyncIterator[str]) -> list[dict]:
    return [json.loads(line) async for line in stream]


def test_mid_stream_failure_is_last_line() -> None:
    stream = encoded(rendered(failing(2, BackendError("model crashed"))), False, "/api/chat")
    out = asyncio.run(lines_of(stream))
    assert [o["message"]["content"] for o in out[:2]] == ["part0 ", "part1 "]
    assert out[-1] == {"error": "model crashed"}


def test_unexpected_exception_is_also_an_error_line() -> None:
    stream = encoded(rendered(failing(1, RuntimeError("boom"))), False, "/api/chat")
    out = asyncio.run(lines_of(stream))
    assert "error" in out[-1] and "boom" not in out[-1]["error"], "internals stay in the log"


def test_mid_stream_failure_is_the_last_sse_event_without_done() -> None:
    async def events() -> list[str]:
        stream = encoded(rendered(failing(1, BackendError("model crashed"))), True, "/v1/x")
        return [e async for e in stream]

    out = asyncio.run(events())
    assert out[0].startswith("data: {") and "[DONE]" not in "".join(out)
    last = json.loads(out[-1].removeprefix("data: "))
    assert last["error"]["message"] == "model crashed" and last["error"]["code"] == "backend_error"


def test_prime_raises_errors_before_the_first_chunk() -> None:
    async def run() -> None:
        await prime(failing(0, ModelNotFound("x")))

    with pytest.raises(ModelNotFound):
        asyncio.run(run())


def test_prime_turns_an_empty_stream_into_a_clean_error() -> None:
    async def empty() -> AsyncIterator[ChatChunk]:
        return
        yield

    with pytest.raises(BackendError, match="without any output"):
        asyncio.run(prime(empty()))
