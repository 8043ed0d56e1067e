"""Client and AsyncClient against a real llmux server with the bundled model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import llmux
from llmux.client import (
    AsyncClient,
    ChatResponse,
    Client,
    GenerateResponse,
    Message,
    ResponseError,
    Stream,
)
from llmux.client.host import base_url
from tests.conftest import MODEL, Server

FAST = {"num_predict": 8, "temperature": 0, "seed": 1}
HI = [{"role": "user", "content": "Say hi."}]


@pytest.fixture()
def client(server: Server) -> Iterator[Client]:
    with Client(server.url) as c:
        yield c


def test_import_is_light_and_exports_the_clients() -> None:
    import subprocess
    import sys

    code = (
        "import sys, llmux; assert 'httpx' not in sys.modules and 'pydantic' not in sys.modules;"
        "from llmux import Client, AsyncClient, ResponseError; print(Client.__module__)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "llmux.client.sync"
    assert llmux.__version__ and llmux.Client is Client
    with pytest.raises(AttributeError):
        _ = llmux.Nope  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("given", "url"),
    [
        (None, "http://127.0.0.1:11434"),
        ("example.com", "http://example.com:11434"),
        ("example.com:8080", "http://example.com:8080"),
        (":9000", "http://127.0.0.1:9000"),
        ("0.0.0.0:9000", "http://127.0.0.1:9000"),
        ("[::1]:9000", "http://[::1]:9000"),
        ("https://llm.example.com/ollama/", "https://llm.example.com:443/ollama"),
        ("http://10.0.0.2:1234", "http://10.0.0.2:1234"),
    ],
)
def test_host_forms(given: str | None, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMUX_HOST", raising=False)
    assert base_url(given) == url


def test_host_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMUX_HOST", "10.1.2.3:7000")
    assert Client().base_url == "http://10.1.2.3:7000"
    assert Client("localhost:1").base_url == "http://localhost:1", "the argument wins"
    with pytest.raises(ValueError, match="invalid port"):
        base_url("h:notaport")


def test_chat_answers_with_typed_and_subscriptable_responses(client: Client) -> None:
    resp = client.chat(MODEL, HI, options=FAST)
    assert isinstance(resp, ChatResponse)
    assert resp.done and resp.done_reason in ("stop", "length")
    assert resp.message.role == "assistant" and resp.message.content
    assert resp["message"]["content"] == resp.message.content
    assert "eval_count" in resp and resp.get("eval_count") == resp.eval_count
    assert "thinking" not in resp.message and resp.get("nope", 1) == 1
    assert 0 < resp.eval_count <= 8  # type: ignore[operator]


def test_chat_stream_yields_chunks_that_add_up(client: Client) -> None:
    stream = client.chat(
        MODEL, [Message(role="user", content="Say hi.")], options=FAST, stream=True
    )
    assert isinstance(stream, Stream)
    chunks = list(stream)
    assert len(chunks) >= 2 and chunks[-1].done and not any(c.done for c in chunks[:-1])
    text = "".join(c.message.content or "" for c in chunks)
    whole = client.chat(MODEL, HI, options=FAST)
    assert text == whole.message.content, "seeded, greedy: streamed == whole"


def test_generate_and_its_stream(client: Client) -> None:
    resp = client.generate(MODEL, "The sky is", options=FAST)
    assert isinstance(resp, GenerateResponse) and resp.response and resp.context
    pieces = [c.response for c in client.generate(MODEL, "The sky is", options=FAST, stream=True)]
    assert "".join(pieces) == resp.response


def test_embed_list_show_ps_version(client: Client) -> None:
    emb = client.embed(MODEL, ["one", "two"])
    assert len(emb.embeddings) == 2 and len(emb.embeddings[0]) > 100
    names = [m.name for m in client.list().models]
    assert MODEL in names
    assert client.list()["models"][0]["details"]["family"]
    shown = client.show(MODEL)
    assert "completion" in (shown.capabilities or []) and shown.template
    assert MODEL in [m.name for m in client.ps().models], "loaded by the chats above"
    assert client.version() == llmux.__version__


def test_unknown_model_is_a_404_response_error(client: Client) -> None:
    for call in (
        lambda: client.chat("nope:1b", HI),
        lambda: client.chat("nope:1b", HI, stream=True),
        lambda: client.show("nope:1b"),
        lambda: client.embed("nope:1b", "x"),
    ):
        with pytest.raises(ResponseError) as exc:
            call()
        assert exc.value.status_code == 404 and "nope:1b" in exc.value.error


def test_closing_a_stream_early_hangs_up(client: Client) -> None:
    options = {**FAST, "num_predict": 200}
    with client.generate(MODEL, "Count to a hundred:", options=options, stream=True) as stream:
        first = next(stream)
    assert not first.done and stream.closed
    assert list(stream) == [], "a closed stream ends"
    assert client.version(), "the client still works"


@pytest.mark.anyio
async def test_async_client_chat_generate_and_errors(server: Server) -> None:
    async with AsyncClient(server.url) as client:
        resp = await client.chat(MODEL, HI, options=FAST)
        assert resp.message.content and resp["done"] is True
        stream = await client.chat(MODEL, HI, options=FAST, stream=True)
        text = "".join([c.message.content or "" async for c in stream])
        assert text == resp.message.content
        gen = await client.generate(MODEL, "The sky is", options=FAST)
        assert gen.response
        assert MODEL in [m.name for m in (await client.list()).models]
        assert (await client.show(MODEL)).details.family
        assert len((await client.embed(MODEL, "x")).embeddings) == 1
        with pytest.raises(ResponseError) as exc:
            await client.chat("nope:1b", HI, stream=True)
        assert exc.value.status_code == 404
