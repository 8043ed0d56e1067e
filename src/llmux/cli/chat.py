"""The chat REPL shared by ``llmux chat`` and ``llmux run``.

:class:`ChatLoop` reads lines through a callable and writes through a
:class:`~llmux.cli.render.Renderer`, so a test drives it by feeding lines. ``read``
raises ``EOFError`` (Ctrl-D, end of input) or ``KeyboardInterrupt`` (Ctrl-C) to end the
session; Ctrl-C while a reply streams only stops that reply.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from llmux.cli.render import Renderer
from llmux.cli.sessions import Reply, Session, Unsupported
from llmux.client import ClientError

Read = Callable[[str], str]

PROMPT, MORE = ">>> ", "... "
BLOCK = '"""'
HELP = """Commands:
  /history      show this conversation's messages (short: h)
  /clear        start a fresh conversation
  /model NAME   answer with another model
  /save [TITLE] keep the conversation (with a title) and show its id
  /load ID      continue a kept conversation
  /bye          leave (short: q; or Ctrl-D)
  /help         this text
Write several lines between \"\"\" and \"\"\". Ctrl-C stops a reply."""


def stdin_reader(interactive: bool) -> Read:
    """``input()`` with its prompt on a terminal; bare lines from a pipe."""
    if interactive:
        return input

    def read(prompt: str) -> str:
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")

    return read


@dataclass
class ChatLoop:
    session: Session
    read: Read
    render: Renderer
    commands: dict[str, Callable[[str], str | None]] = field(init=False)
    done: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        s = self.session
        self.commands = {
            "/history": self._history,
            "/clear": lambda _: s.clear(),
            "/model": lambda arg: s.use_model(arg) if arg else f"Model: {s.model} (/model NAME)",
            "/save": lambda arg: s.save(arg or None),
            "/load": lambda arg: s.load(arg) if arg else "Usage: /load ID",
            "/bye": self._bye,
            "/help": lambda _: HELP,
            "/?": lambda _: HELP,
        }

    def run(self) -> None:
        """Read and answer until ``/bye``, end of input or Ctrl-C at the prompt."""
        for text in self._inputs():
            if text.startswith("/"):
                self._command(text)
            elif text == "q":
                self._bye("")
            elif text == "h":
                self._command("/history")
            else:
                self._reply(text)
            if self.done:
                return

    def _inputs(self) -> Iterator[str]:
        while True:
            try:
                line = self.read(PROMPT)
                if line.lstrip().startswith(BLOCK):
                    line = self._block(line.lstrip()[len(BLOCK) :])
            except (EOFError, KeyboardInterrupt):
                return
            if line.strip():
                yield line.strip()

    def _block(self, first: str) -> str:
        """Lines up to one that ends with the closing triple quote."""
        lines = [first]
        while not (lines[-1].rstrip().endswith(BLOCK) and (len(lines) > 1 or first.strip())):
            lines.append(self.read(MORE))
        lines[-1] = lines[-1].rstrip().removesuffix(BLOCK)
        return "\n".join(lines)

    def _command(self, text: str) -> None:
        name, _, arg = text.partition(" ")
        action = self.commands.get(name.lower())
        if action is None:
            self.render.warn(f"Unknown command {name}; /help lists the commands.")
            return
        try:
            message = action(arg.strip())
        except (ClientError, Unsupported) as exc:
            self.render.warn(f"Error: {exc}")
            return
        if message:
            self.render.say(message)

    def _reply(self, text: str) -> None:
        chunks: Reply | None = None
        try:
            chunks = self.session.reply(text)
            self.render.reply(_content(chunks))
        except KeyboardInterrupt:
            self.render.warn("[reply stopped]")
        except ClientError as exc:
            self.render.warn(f"Error: {exc}")
        finally:
            if chunks is not None:
                chunks.close()

    def _history(self, _: str) -> str:
        messages = self.session.history()
        if not messages:
            return "No messages yet."
        return "\n\n".join(f"{role}: {content}" for role, content in messages)

    def _bye(self, _: str) -> None:
        self.done = True


def _content(chunks: Reply) -> Iterator[str]:
    for chunk in chunks:
        if chunk.message.content:
            yield chunk.message.content
