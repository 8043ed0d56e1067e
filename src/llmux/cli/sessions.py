"""What a chat REPL talks to: a conversation kept by the server (``llmux chat``) or a
history kept here (``llmux run``). Both stream replies as SDK chunks."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Protocol

from llmux.client import ChatResponse, Client, ResponseError

Reply = Generator[ChatResponse, None, None]


class Unsupported(Exception):
    """A REPL command this kind of session cannot do; the message says what can."""


class Session(Protocol):
    model: str

    def reply(self, content: str) -> Reply:
        """Send ``content``; the chunks of the answer. Closing the generator hangs up."""

    def history(self) -> list[tuple[str, str]]:
        """``(role, content)`` for each message so far."""

    def clear(self) -> str:
        """Start afresh; a line saying what happened."""

    def use_model(self, name: str) -> str:
        """Answer with ``name`` from now on (it must be installed)."""

    def save(self, title: str | None) -> str:
        """Keep the conversation (with ``title``); a line with its id."""

    def load(self, id: str) -> str:
        """Continue a kept conversation; a line saying which."""


def check_model(client: Client, name: str) -> str:
    """``name`` if the server has it; else a ResponseError whose message names the fix."""
    try:
        client.show(name)
    except ResponseError as exc:
        if exc.status_code == 404:
            raise ResponseError(f"model '{name}' not found, try `llmux pull {name}`", 404) from exc
        raise
    return name


class SessionBase:
    """What both kinds of session are made with."""

    def __init__(
        self,
        client: Client,
        model: str,
        *,
        system: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.client, self.model, self.system, self.options = client, model, system, options
        self.setup()

    def setup(self) -> None:
        """State of the kind of session."""


class ConversationSession(SessionBase):
    """A conversation on the server (``/api/conversations``), created on first use."""

    def setup(self) -> None:
        self.id: str | None = None

    def _ensure(self) -> str:
        if self.id is None:
            conv = self.client.conversations.create(model=self.model, system=self.system)
            self.id = conv.id
        return self.id

    def reply(self, content: str) -> Reply:
        stream = self.client.conversations.send(
            self._ensure(), content, model=self.model, options=self.options, stream=True
        )
        with stream:
            yield from stream

    def history(self) -> list[tuple[str, str]]:
        if self.id is None:
            return []
        messages = self.client.conversations.get(self.id).messages
        return [(m.role + (" (stopped)" if m.partial else ""), m.content) for m in messages]

    def clear(self) -> str:
        self.id = None
        return "Started a new conversation."

    def use_model(self, name: str) -> str:
        self.model = check_model(self.client, name)
        if self.id is not None:
            self.client.conversations.update(self.id, model=self.model)
        return f"Now chatting with {self.model}."

    def save(self, title: str | None) -> str:
        id = self._ensure()
        if title:
            self.client.conversations.update(id, title=title)
        return f"Saved conversation {id}" + (f" as {title!r}" if title else "")

    def load(self, id: str) -> str:
        conv = self.client.conversations.get(id)
        self.id = conv.id
        self.model = conv.model or self.model
        return (
            f"Loaded conversation {conv.id} ({conv.title or 'untitled'},"
            f" {len(conv.messages)} messages, model {self.model})."
        )


class LocalSession(SessionBase):
    """A history kept in this process and sent whole with each turn (``/api/chat``)."""

    def setup(self) -> None:
        self.messages: list[dict[str, str]] = []

    def reply(self, content: str) -> Reply:
        system = [{"role": "system", "content": self.system}] if self.system else []
        turn = [*self.messages, {"role": "user", "content": content}]
        stream = self.client.chat(self.model, system + turn, options=self.options, stream=True)
        text: list[str] = []
        try:
            with stream:
                for chunk in stream:
                    text.append(chunk.message.content or "")
                    yield chunk
        finally:
            if text:  # a reply cut short is kept, as the server keeps a partial one
                self.messages = [*turn, {"role": "assistant", "content": "".join(text)}]

    def history(self) -> list[tuple[str, str]]:
        return [(m["role"], m["content"]) for m in self.messages]

    def clear(self) -> str:
        self.messages = []
        return "Cleared the session context."

    def use_model(self, name: str) -> str:
        self.model = check_model(self.client, name)
        return f"Now chatting with {self.model}."

    def save(self, title: str | None) -> str:
        raise Unsupported("`llmux run` keeps no history on the server; use `llmux chat` to /save")

    def load(self, id: str) -> str:
        raise Unsupported("`llmux run` keeps no history on the server; use `llmux chat` to /load")
