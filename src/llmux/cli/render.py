"""How a streamed reply reaches the screen: live Markdown on a terminal, plain text
otherwise (a pipe, a file, a test)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Protocol, TextIO

from rich.console import Console
from rich.live import Live
from rich.markdown import Markdown


class Renderer(Protocol):
    def reply(self, pieces: Iterable[str]) -> str:
        """Show text as it arrives; return all of it."""

    def say(self, text: str) -> None:
        """A line of information (command output)."""

    def warn(self, text: str) -> None:
        """A line about something that went wrong; the session goes on."""


class PlainRenderer:
    """Writes pieces as they come and flushes, so a pipe sees the reply stream."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def reply(self, pieces: Iterable[str]) -> str:
        text: list[str] = []
        try:
            for piece in pieces:
                text.append(piece)
                self.out.write(piece)
                self.out.flush()
        finally:
            if text and not text[-1].endswith("\n"):
                self.out.write("\n")
            self.out.flush()
        return "".join(text)

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def warn(self, text: str) -> None:
        print(text, file=self.err, flush=True)


class MarkdownRenderer:
    """Re-renders the reply as Markdown while it streams (rich ``Live``)."""

    def __init__(self, console: Console, err: Console) -> None:
        self.console, self.err = console, err

    def reply(self, pieces: Iterable[str]) -> str:
        text = ""
        with Live(
            Markdown(""), console=self.console, refresh_per_second=12, vertical_overflow="visible"
        ) as live:
            for piece in pieces:
                text += piece
                live.update(Markdown(text))
        return text

    def say(self, text: str) -> None:
        self.console.print(text, markup=False)

    def warn(self, text: str) -> None:
        self.err.print(text, markup=False, style="red")


def renderer_for(console: Console, err: Console) -> Renderer:
    """Markdown where stdout is a terminal, plain text everywhere else."""
    return MarkdownRenderer(console, err) if console.is_terminal else PlainRenderer()
