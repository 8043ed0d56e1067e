"""Shape a backend's raw text stream: reasoning trace apart, tool calls parsed.

Backends produce text; this turns it into what the APIs need:

* with ``reasoning`` on, ``<think>...</think>`` text moves to ``thinking`` (and is
  dropped when thinking was turned off but the model thinks anyway);
* with tools active, a reply that is a tool call is held back until complete and then
  sent as one chunk with ``tool_calls``; any other reply streams as it comes.

The final chunk's metrics gain ``reasoning_tokens``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass

from llmux.core.chunks import ChatChunk, Metrics
from llmux.core.reasoning import ReasoningSplitter
from llmux.core.request import Tool, ToolCall
from llmux.core.tools import parse_tool_calls

_CALL_STARTS = ("{", "[", "<tool_call>", "```")


class ToolDetector:
    """Decides early whether a reply is a tool call; buffers it if it may be one."""

    def __init__(self, tools: tuple[Tool, ...], forced: bool) -> None:
        self.tools = tools
        self._mode = "buffer" if forced else "undecided"
        self._buf: list[str] = []

    def feed(self, text: str) -> str:
        if self._mode == "stream":
            return text
        self._buf.append(text)
        if self._mode == "buffer":
            return ""
        joined = "".join(self._buf)
        start = joined.lstrip()
        if not start:
            return ""
        if start.startswith(_CALL_STARTS):
            self._mode = "buffer"
            return ""
        if any(marker.startswith(start) for marker in _CALL_STARTS):
            return ""  # may still become a call
        self._mode, self._buf = "stream", []
        return joined

    def finish(self) -> tuple[tuple[ToolCall, ...], str]:
        joined, self._buf = "".join(self._buf), []
        if self._mode == "stream" or not joined:
            return (), ""
        calls, rest = parse_tool_calls(joined, self.tools)
        return (calls, rest) if calls else ((), joined)


@dataclass(slots=True)
class _Choice:
    splitter: ReasoningSplitter | None
    detector: ToolDetector | None
    hide_thinking: bool
    reasoning_tokens: int = 0

    def text(self, content: str, index: int, model: str, thinking: str = "") -> list[ChatChunk]:
        if self.splitter is not None:
            think_part, content = self.splitter.feed(content)
            thinking += think_part
        if thinking and not content:
            self.reasoning_tokens += 1
        if self.hide_thinking:
            thinking = ""
        if self.detector is not None:
            content = self.detector.feed(content)
        if not content and not thinking:
            return []
        return [ChatChunk(content=content, thinking=thinking, index=index, model=model)]

    def finish(self, done: ChatChunk) -> list[ChatChunk]:
        out: list[ChatChunk] = []
        if self.splitter is not None:
            thinking, content = self.splitter.flush()
            self.splitter = None
            out += self.text(content, done.index, done.model, thinking)
        if self.detector is not None:
            calls, rest = self.detector.finish()
            if calls or rest:
                out.append(
                    ChatChunk(content=rest, tool_calls=calls, index=done.index, model=done.model)
                )
        metrics = done.metrics or Metrics()
        metrics = dataclasses.replace(
            metrics, reasoning_tokens=min(self.reasoning_tokens, metrics.completion_tokens)
        )
        out.append(dataclasses.replace(done, metrics=metrics))
        return out


async def shape(
    chunks: AsyncIterator[ChatChunk],
    *,
    reasoning: bool,
    thinking_first: bool = False,
    hide_thinking: bool = False,
    tools: tuple[Tool, ...] = (),
    forced_tools: bool = False,
) -> AsyncIterator[ChatChunk]:
    choices: dict[int, _Choice] = {}
    async for chunk in chunks:
        state = choices.get(chunk.index)
        if state is None:
            state = choices[chunk.index] = _Choice(
                splitter=ReasoningSplitter(thinking_first=thinking_first) if reasoning else None,
                detector=ToolDetector(tools, forced_tools) if tools else None,
                hide_thinking=hide_thinking,
            )
        pieces = (
            state.finish(chunk)
            if chunk.done
            else state.text(chunk.content, chunk.index, chunk.model, chunk.thinking)
        )
        if chunk.logprobs and pieces:
            pieces[0] = dataclasses.replace(pieces[0], logprobs=chunk.logprobs)
        elif chunk.logprobs:
            pieces = [dataclasses.replace(chunk, content="", thinking="")]
        for piece in pieces:
            yield piece
