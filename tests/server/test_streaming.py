"""The NDJSON renderer ends a failing stream with an error line (checklist N18)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from llmux.core.chunks import ChatChunk
from llmux.errors import BackendError, ModelNotFound
from llmux.protocols.ollama.stream import chat_object
from llmux.server.streaming import ndjson_lines, prime


async def failing(after: int, exc: Exception) -> AsyncIterator[ChatChunk]:
    for i in range(after):
        yield ChatChunk(content=f"part{i} ")
    raise exc


async def lines_of(stream: AsyncIterator[str]) -> list[dict]:
    return [json.loads(line) async for line in stream]


def test_mid_stream_failure_is_last_line() -> None:
    stream = ndjson_lines(failing(2, BackendError("model crashed")), lambda c: chat_object(c, "m"))
    out = asyncio.run(lines_of(stream))
    assert [o["message"]["content"] for o in out[:2]] == ["part0 ", "part1 "]
    assert out[-1] == {"error": "model crashed"}


def test_unexpected_exception_is_also_an_error_line() -> None:
    stream = ndjson_lines(failing(1, RuntimeError("boom")), lambda c: chat_object(c, "m"))
    out = asyncio.run(lines_of(stream))
    assert "error" in out[-1] and "boom" not in out[-1]["error"], "internals stay in the log"


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
