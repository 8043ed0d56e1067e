"""``client.conversations`` against the real server (docs/conversations.md)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest

from llmux.client import (
    AsyncClient,
    Client,
    Conversation,
    ConversationDetail,
    ResponseError,
    StoredMessage,
)
from tests.conftest import MODEL, Server

FAST = {"num_predict": 8, "temperature": 0, "seed": 1}


@pytest.fixture()
def client(server: Server) -> Iterator[Client]:
    with Client(server.url) as c:
        yield c


def wait_for_messages(client: Client, id: str, count: int) -> list[StoredMessage]:
    deadline = time.monotonic() + 30
    while True:
        messages = client.conversations.get(id).messages
        if len(messages) >= count or time.monotonic() > deadline:
            return messages
        time.sleep(0.2)


def test_create_send_get_update_export_delete(client: Client) -> None:
    word = f"zebra{uuid.uuid4().hex[:6]}"
    conv = client.conversations.create(title="SDK test", model=MODEL, system="Be terse.")
    assert isinstance(conv, Conversation) and conv.model == MODEL and conv["title"] == "SDK test"

    one = client.conversations.send(conv.id, f"Say {word}.", options=FAST)
    assert one.message.content and one.conversation_id == conv.id and one.message_id
    chunks = list(client.conversations.send(conv.id, "Again.", options=FAST, stream=True))
    streamed = "".join(c.message.content or "" for c in chunks)
    assert chunks[-1].done and chunks[-1].conversation_id == conv.id

    got = client.conversations.get(conv.id)
    assert isinstance(got, ConversationDetail) and got.system == "Be terse."
    assert [m.role for m in got.messages] == ["user", "assistant", "user", "assistant"]
    assert got.messages[0].content == f"Say {word}."
    assert got.messages[3].content == streamed and got.messages[3].id == chunks[-1].message_id
    assert got.message_count == 4 and not any(m.partial for m in got.messages)

    found = client.conversations.list(q=word)
    assert [c.id for c in found] == [conv.id] and word in (found[0].snippet or "").lower()
    assert client.conversations.list(q=word, offset=1) == []
    assert conv.id in [c.id for c in client.conversations.list(limit=200)]

    renamed = client.conversations.update(conv.id, title="Renamed")
    assert renamed.title == "Renamed" and renamed.model == MODEL

    markdown = client.conversations.export(conv.id)
    assert markdown.startswith("# Renamed") and f"Say {word}." in markdown
    exported = json.loads(client.conversations.export(conv.id, format="json"))
    assert exported["id"] == conv.id and len(exported["messages"]) == 4
    with pytest.raises(ValueError, match="markdown"):
        client.conversations.export(conv.id, format="yaml")  # type: ignore[arg-type]

    client.conversations.delete(conv.id)
    with pytest.raises(ResponseError) as exc:
        client.conversations.get(conv.id)
    assert exc.value.status_code == 404


def test_regenerate_replaces_the_last_reply(client: Client) -> None:
    conv = client.conversations.create(model=MODEL)
    client.conversations.send(conv.id, "Name a colour.", options=FAST)
    again = client.conversations.regenerate(conv.id, options={**FAST, "seed": 7, "temperature": 1})
    messages = client.conversations.get(conv.id).messages
    assert [m.role for m in messages] == ["user", "assistant"]
    assert messages[1].content == again.message.content


def test_closing_a_send_stream_keeps_a_partial_reply(client: Client) -> None:
    conv = client.conversations.create(model=MODEL)
    options = {"num_predict": 2000, "temperature": 0.8}
    stream = client.conversations.send(conv.id, "Tell a long story.", options=options, stream=True)
    for _ in range(3):
        next(stream)
    stream.close()
    messages = wait_for_messages(client, conv.id, 2)
    assert messages[-1].role == "assistant" and messages[-1].partial
    assert messages[-1].content


def test_errors_name_the_problem(client: Client) -> None:
    with pytest.raises(ResponseError) as exc:
        client.conversations.send("0" * 32, "hi")
    assert exc.value.status_code == 404 and "0" * 32 in exc.value.error
    with pytest.raises(ResponseError) as exc:
        client.conversations.create(model="nope:1b")
    assert exc.value.status_code == 404 and "nope:1b" in exc.value.error
    with pytest.raises(ValueError, match="conversation id"):
        client.conversations.get("")


@pytest.mark.anyio
async def test_async_conversations(server: Server) -> None:
    async with AsyncClient(server.url) as client:
        conv = await client.conversations.create(model=MODEL)
        stream = await client.conversations.send(conv.id, "Hi.", options=FAST, stream=True)
        text = "".join([c.message.content or "" async for c in stream])
        got = await client.conversations.get(conv.id)
        assert got.messages[-1].content == text
        assert conv.id in [c.id for c in await client.conversations.list(limit=200)]
        assert (await client.conversations.export(conv.id)).startswith("#")
        await client.conversations.delete(conv.id)
        with pytest.raises(ResponseError):
            await client.conversations.get(conv.id)
