"""``llmux run`` and ``llmux chat`` over the SDK: a one-shot answer, or the REPL."""

from __future__ import annotations

import sys
from typing import Any

from llmux.cli.chat import ChatLoop, stdin_reader
from llmux.cli.common import err, fail, out, sdk_errors
from llmux.cli.render import renderer_for
from llmux.cli.sessions import ConversationSession, LocalSession, Session, check_model
from llmux.client import Client

BANNER = "Chatting with {model}. /help lists the commands, /bye leaves."


def one_shot(
    client: Client,
    model: str,
    prompt: str,
    *,
    system: str | None,
    options: dict[str, Any] | None,
) -> None:
    """Stream the answer to one prompt; errors before or during it exit with status 1."""
    session = LocalSession(client, model, system=system, options=options)
    render = renderer_for(out, err)
    with sdk_errors(model):
        chunks = session.reply(prompt)
        try:
            render.reply(c.message.content or "" for c in chunks)
        finally:
            chunks.close()


def first_model(client: Client) -> str:
    with sdk_errors():
        models = client.list().models
    if not models:
        fail("the server has no models; pull one with `llmux pull NAME`, then `llmux chat NAME`")
    return models[0].name


def repl(
    client: Client,
    model: str | None,
    *,
    system: str | None,
    options: dict[str, Any] | None,
    local: bool,
) -> None:
    """The interactive loop; ``local`` keeps the history here instead of on the server."""
    name = model or first_model(client)
    with sdk_errors(name):
        check_model(client, name)
    session: Session
    if local:
        session = LocalSession(client, name, system=system, options=options)
    else:
        session = ConversationSession(client, name, system=system, options=options)
    interactive = sys.stdin.isatty()
    render = renderer_for(out, err)
    if interactive:
        render.say(BANNER.format(model=name))
    ChatLoop(session, stdin_reader(interactive), render).run()
