"""The conversations extension of the native API: request bodies and response objects.

Pure functions and pydantic models, no I/O. Documented in ``docs/conversations.md``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import Field

from llmux.core.conversations import Conversation, StoredMessage
from llmux.protocols.ollama.wire import KeepAlive, Wire
from llmux.protocols.times import epoch_rfc3339

TITLE_LENGTH = 60


class CreateBody(Wire):
    title: str = Field("", max_length=500)
    model: str = ""
    system: str = ""


class PatchBody(Wire):
    title: str | None = Field(None, max_length=500)
    model: str | None = None
    system: str | None = None


class ReplyBody(Wire):
    """What a reply may be shaped by: the same fields as ``/api/chat``."""

    model: str = ""
    options: dict[str, Any] | None = None
    stream: bool = True
    think: bool | str | None = None
    format: str | dict[str, Any] | None = None
    keep_alive: KeepAlive = None


class MessageBody(ReplyBody):
    content: str = Field(min_length=1)
    images: list[str] | None = None


def timestamp(epoch: float) -> str:
    return epoch_rfc3339(epoch, "milliseconds")


def conversation_object(
    conv: Conversation, messages: list[StoredMessage] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": conv.id,
        "title": conv.title,
        "model": conv.model,
        "system": conv.system,
        "created_at": timestamp(conv.created_at),
        "updated_at": timestamp(conv.updated_at),
        "message_count": conv.message_count,
    }
    if conv.snippet is not None:
        out["snippet"] = conv.snippet
    if messages is not None:
        out["messages"] = [message_object(m) for m in messages]
    return out


def message_object(m: StoredMessage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": m.id,
        "role": m.role,
        "content": m.content,
        "thinking": m.thinking,
        "model": m.model,
        "created_at": timestamp(m.created_at),
        "partial": m.partial,
        "done_reason": m.done_reason,
    }
    if m.prompt_tokens is not None or m.completion_tokens is not None:
        out["usage"] = {"prompt_tokens": m.prompt_tokens, "completion_tokens": m.completion_tokens}
    return out


def title_from(text: str) -> str:
    """A title from a first message: its first non-empty line, cut at a word boundary."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = re.sub(r"\s+", " ", line)
    if len(line) <= TITLE_LENGTH:
        return line
    cut = line[: TITLE_LENGTH - 1]
    if " " in cut[TITLE_LENGTH // 2 :]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,.;:") + "…"


def export_filename(conv: Conversation, extension: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", conv.title).strip("-").lower()[:50]
    return f"{slug or 'conversation'}-{conv.id[:8]}.{extension}"


def export_json(conv: Conversation, messages: list[StoredMessage]) -> str:
    return json.dumps(conversation_object(conv, messages), ensure_ascii=False, indent=2) + "\n"


def export_markdown(conv: Conversation, messages: list[StoredMessage]) -> str:
    lines = [f"# {conv.title or 'Untitled conversation'}", ""]
    meta = [f"Created {timestamp(conv.created_at)[:16].replace('T', ' ')} UTC"]
    if conv.model:
        meta.append(f"model `{conv.model}`")
    lines += ["_" + ", ".join(meta) + "_", ""]
    if conv.system:
        lines += ["**System**", "", _quote(conv.system), ""]
    for m in messages:
        who = "You" if m.role == "user" else m.role.capitalize()
        heading = f"## {who}"
        if m.role == "assistant" and m.model:
            heading += f" ({m.model})"
        lines += [heading, ""]
        if m.thinking:
            lines += [
                "<details><summary>Thinking</summary>",
                "",
                m.thinking.strip(),
                "",
                "</details>",
                "",
            ]
        lines += [m.content.rstrip(), ""]
        if m.partial:
            lines += ["_(reply interrupted)_", ""]
    return "\n".join(lines).rstrip() + "\n"


def _quote(text: str) -> str:
    return "\n".join("> " + ln if ln else ">" for ln in text.splitlines())
