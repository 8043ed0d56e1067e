"""The two ways a reply reaches the screen."""

from __future__ import annotations

import io

from rich.console import Console

from llmux.cli.render import MarkdownRenderer, PlainRenderer, renderer_for


def test_plain_renderer_streams_pieces_and_ends_the_line() -> None:
    out, err = io.StringIO(), io.StringIO()
    render = PlainRenderer(out, err)
    assert render.reply(iter(["Hel", "lo"])) == "Hello"
    assert out.getvalue() == "Hello\n"
    render.reply(iter(["done\n"]))
    assert out.getvalue() == "Hello\ndone\n", "no blank line after a reply ending in one"
    render.reply(iter([]))
    assert out.getvalue() == "Hello\ndone\n", "nothing for an empty reply"


def test_markdown_on_a_terminal_plain_elsewhere() -> None:
    tty = Console(file=io.StringIO(), force_terminal=True, width=60)
    render = renderer_for(tty, tty)
    assert isinstance(render, MarkdownRenderer)
    assert render.reply(iter(["# Title\n\n", "- **one**\n", "- two"])) == (
        "# Title\n\n- **one**\n- two"
    )
    shown = tty.file.getvalue()  # type: ignore[attr-defined]
    assert "Title" in shown and "one" in shown and "**" not in shown, "rendered, not raw"
    pipe = Console(file=io.StringIO(), force_terminal=False)
    assert isinstance(renderer_for(pipe, pipe), PlainRenderer)
