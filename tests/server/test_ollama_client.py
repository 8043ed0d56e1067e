"""The official ``ollama`` Python client, unmodified, against llmux (checklist N29)."""

from __future__ import annotations

import asyncio
import json

import ollama
import pytest

from tests.conftest import MODEL, Server

pytestmark = pytest.mark.model
OPTIONS = {"temperature": 0, "seed": 11, "num_predict": 30}


@pytest.fixture()
def client(server: Server) -> ollama.Client:
    return ollama.Client(host=server.url)


def test_chat_streaming_and_not(client: ollama.Client) -> None:
    messages = [{"role": "user", "content": "Why is the sky blue?"}]
    whole = client.chat(model=MODEL, messages=messages, options=OPTIONS)
    assert whole.message.role == "assistant" and whole.message.content
    assert whole.done and whole.eval_count and whole.total_duration
    parts = list(client.chat(model=MODEL, messages=messages, options=OPTIONS, stream=True))
    assert parts[-1].done and not any(p.done for p in parts[:-1])
    assert "".join(p.message.content for p in parts) == whole.message.content


def test_generate(client: ollama.Client) -> None:
    r = client.generate(model=MODEL, prompt="Write one word.", options=OPTIONS)
    assert r.response and r.done and r.context
    streamed = "".join(
        p.response
        for p in client.generate(
            model=MODEL, prompt="Write one word.", options=OPTIONS, stream=True
        )
    )
    assert streamed == r.response


def test_list_and_show(client: ollama.Client) -> None:
    names = [m.model for m in client.list().models]
    assert MODEL in names
    shown = client.show(MODEL)
    assert shown.modelinfo and shown.modelinfo["general.architecture"] == "llama"
    assert shown.details and shown.details.quantization_level == "Q4_1"
    assert shown.capabilities == ["completion", "tools"]


def test_embed(client: ollama.Client) -> None:
    r = client.embed(model=MODEL, input=["first", "second"])
    assert len(r.embeddings) == 2 and len(r.embeddings[0]) == len(r.embeddings[1]) > 100
    legacy = client.embeddings(model=MODEL, prompt="hello")
    assert len(legacy.embedding) == len(r.embeddings[0])


def test_copy_and_delete(client: ollama.Client) -> None:
    assert client.copy(MODEL, "client-copy:v1").status == "success"
    assert "client-copy:v1" in [m.model for m in client.list().models]
    assert client.delete("client-copy:v1").status == "success"
    with pytest.raises(ollama.ResponseError) as info:
        client.delete("client-copy:v1")
    assert info.value.status_code == 404


def test_ps_and_format(client: ollama.Client) -> None:
    client.generate(model=MODEL, prompt="", keep_alive="5m")
    assert MODEL in [m.model for m in client.ps().models]
    r = client.chat(
        model=MODEL,
        messages=[{"role": "user", "content": "Give me a JSON object."}],
        format="json",
        options=OPTIONS,
    )
    assert isinstance(json.loads(r.message.content), dict)


def test_errors_raise_response_error(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model="missing-model", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 404 and "not found" in info.value.error
    with pytest.raises(ollama.ResponseError) as info:
        list(
            client.chat(
                model="missing-model", messages=[{"role": "user", "content": "x"}], stream=True
            )
        )
    assert info.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as info:
        client.generate(model=MODEL, prompt="x", options={"temperature": "hot"})
    assert info.value.status_code == 400


def test_async_client_streams(server: Server) -> None:
    async def run() -> str:
        client = ollama.AsyncClient(host=server.url)
        out = []
        async for part in await client.chat(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], options=OPTIONS, stream=True
        ):
            out.append(part.message.content)
        return "".join(out)

    assert asyncio.run(run())
