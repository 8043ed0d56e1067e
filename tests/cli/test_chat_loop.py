"""The chat REPL driven by fed lines, in-process, over a real server."""

from __future__ import annotations

import io
import time
from collections.abc import Iterable, Iterator

import pytest

from llmux.cli.chat import MORE, PROMPT, ChatLoop
from llmux.cli.render import PlainRenderer
from llmux.cli.sessions import ConversationSession, LocalSession, Session
from llmux.client import Client
from tests.conftest import MODEL, Server

FAST = {"num_predict": 8, "temperature": 0, "seed": 1}


class Feed:
    """``read`` for the loop: the given lines, then end of input; records the prompts."""

    def __init__(self, *lines: str | type[BaseException]) -> None:
        self.lines = list(lines)
        self.prompts: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        if not self.lines:
            raise EOFError
        line = self.lines.pop(0)
        if isinstance(line, type):
            raise line()
        return line


class Screen(PlainRenderer):
    def __init__(self) -> None:
        super().__init__(io.StringIO(), io.StringIO())

    @property
    def text(self) -> str:
        return self.out.getvalue()  # type: ignore[attr-defined,no-any-return]

    @property
    def errors(self) -> str:
        return self.err.getvalue()  # type: ignore[attr-defined,no-any-return]


class CtrlCAfterFirstPiece(Screen):
    """A screen whose user presses Ctrl-C once the first piece of a reply shows."""

    def reply(self, pieces: Iterable[str]) -> str:
        def cut() -> Iterator[str]:
            for piece in pieces:
                yield piece
                raise KeyboardInterrupt

        return super().reply(cut())


@pytest.fixture()
def client(server: Server) -> Iterator[Client]:
    with Client(server.url) as c:
        yield c


def chat(
    client: Client, *lines: str | type[BaseException], screen: Screen | None = None
) -> tuple[ConversationSession, Screen, Feed]:
    session = ConversationSession(client, MODEL, options=FAST)
    screen = screen or Screen()
    feed = Feed(*lines)
    ChatLoop(session, feed, screen).run()
    return session, screen, feed


def test_messages_history_save_and_bye(client: Client) -> None:
    session, screen, feed = chat(client, "Say hi.", "/history", "/save My chat", "/bye", "never")
    assert feed.lines == ["never"], "/bye ended the loop"
    assert session.id is not None
    conv = client.conversations.get(session.id)
    assert conv.title == "My chat"
    assert [m.role for m in conv.messages] == ["user", "assistant"]
    reply = conv.messages[1].content
    assert reply and screen.text.startswith(reply)
    assert f"user: Say hi.\n\nassistant: {reply}" in screen.text
    assert f"Saved conversation {session.id} as 'My chat'" in screen.text


def test_short_forms_and_multiline_blocks(client: Client) -> None:
    session, screen, feed = chat(client, '"""first line', "second line", 'end"""', "h", "q", "x")
    assert feed.prompts == [PROMPT, MORE, MORE, PROMPT, PROMPT] and feed.lines == ["x"]
    assert session.id is not None
    sent = client.conversations.get(session.id).messages[0].content
    assert sent == "first line\nsecond line\nend"
    assert "user: first line\nsecond line\nend" in screen.text, "h shows the history"


def test_one_line_block_and_blank_lines(client: Client) -> None:
    session, _, _ = chat(client, "", '   """Hello there."""', "   ")
    assert session.id is not None
    first = client.conversations.get(session.id).messages[0]
    assert first.content == "Hello there."


def test_clear_load_model_and_unknown_commands(client: Client) -> None:
    first, _, _ = chat(client, "Say one.")
    assert first.id is not None
    session, screen, _ = chat(
        client,
        "/clear",
        "/history",
        "/model nope:1b",
        "/model",
        f"/load {first.id}",
        "/history",
        "/load 00000000000000000000000000000000",
        "/frobnicate",
        "/help",
    )
    assert "Started a new conversation." in screen.text
    assert "No messages yet." in screen.text
    assert "model 'nope:1b' not found, try `llmux pull nope:1b`" in screen.errors
    assert f"Model: {MODEL}" in screen.text
    assert f"Loaded conversation {first.id}" in screen.text and "2 messages" in screen.text
    assert "user: Say one." in screen.text
    assert "conversation '00000000000000000000000000000000' not found" in screen.errors
    assert "Unknown command /frobnicate" in screen.errors
    assert "/save [TITLE]" in screen.text
    assert session.id == first.id, "a failed /load keeps the loaded conversation"


def test_ctrl_c_while_streaming_stops_the_reply_and_keeps_it_partial(client: Client) -> None:
    session = ConversationSession(client, MODEL, options={"num_predict": 2000, "temperature": 0.8})
    screen = CtrlCAfterFirstPiece()
    feed = Feed("Tell a very long story.", "/save")
    ChatLoop(session, feed, screen).run()
    assert "[reply stopped]" in screen.errors
    assert "Saved conversation" in screen.text, "the loop went on after the Ctrl-C"
    assert session.id is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        messages = client.conversations.get(session.id).messages
        if len(messages) == 2:
            break
        time.sleep(0.2)
    assert messages[1].partial and messages[1].content


def test_ctrl_c_or_ctrl_d_at_the_prompt_ends_the_session(client: Client) -> None:
    for end in (KeyboardInterrupt, EOFError):
        _, _, feed = chat(client, end, "never")
        assert feed.lines == ["never"]


def test_local_session_keeps_history_here(client: Client) -> None:
    session: Session = LocalSession(client, MODEL, options=FAST)
    screen = Screen()
    feed = Feed("Say hi.", "Say bye.", "/history", "/save", "/clear", "/history")
    ChatLoop(session, feed, screen).run()
    assert "user: Say hi.\n\nassistant:" in screen.text
    assert "\n\nuser: Say bye.\n\nassistant:" in screen.text, "the first turn was kept"
    assert "use `llmux chat` to /save" in screen.errors
    assert "Cleared the session context." in screen.text and "No messages yet." in screen.text
