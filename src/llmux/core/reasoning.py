"""Split a model's reasoning trace from its answer.

DeepSeek-R1-style models write ``<think> ... </think>`` before the answer. The splitter
routes streamed text into ``thinking`` and ``content`` as it arrives, holding back a
tag cut across two pieces, so neither side ever shows a fragment of a tag. One splitter
serves every API: Ollama's ``thinking``, DeepSeek's ``reasoning_content``.
"""

from __future__ import annotations

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that is a proper start of ``tag``."""
    for k in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:k]):
            return k
    return 0


class ReasoningSplitter:
    def __init__(self, *, thinking_first: bool = False) -> None:
        """``thinking_first``: the template already opened the think block, so the
        model's output starts inside it (as with templates that end in ``<think>``)."""
        self._in_think = thinking_first
        self._seen_open = thinking_first
        self._held = ""
        self._strip_next = False
        self._trace_started = False  # leading whitespace of the trace is dropped

    def feed(self, text: str) -> tuple[str, str]:
        """Returns ``(thinking, content)`` that may be emitted now."""
        buf = self._held + text
        self._held = ""
        thinking: list[str] = []
        content: list[str] = []
        while buf:
            if self._in_think:
                if not self._trace_started:
                    buf = buf.lstrip()
                    if not buf:
                        break
                    self._trace_started = True
                end = buf.find(CLOSE_TAG)
                if end < 0:
                    keep = _partial_suffix(buf, CLOSE_TAG)
                    thinking.append(buf[: len(buf) - keep])
                    self._held = buf[len(buf) - keep :]
                    break
                thinking.append(buf[:end])
                buf = buf[end + len(CLOSE_TAG) :]
                self._in_think = False
                self._strip_next = True
                continue
            if self._strip_next:
                buf = buf.lstrip()
                if not buf:
                    break
                self._strip_next = False
            if not self._seen_open:
                stripped = buf.lstrip()
                if stripped.startswith(OPEN_TAG):
                    buf = stripped[len(OPEN_TAG) :]
                    self._in_think = self._seen_open = True
                    continue
                if OPEN_TAG.startswith(stripped):  # could still become the open tag
                    self._held = buf
                    break
                self._seen_open = True  # the answer began without thinking
            content.append(buf)
            break
        return "".join(thinking), "".join(content)

    def flush(self) -> tuple[str, str]:
        held, self._held = self._held, ""
        return (held, "") if self._in_think else ("", held)
