"""``client.files`` and ``client.batches`` against a real server with the bundled model
(docs/batch.md): uploads from a path, bytes or an open file, pages, downloads that
appear only when complete, and batches created, listed, waited for and cancelled. No
assertion reads what the model wrote."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmux.client import (
    TERMINAL_STATUSES,
    AsyncClient,
    Batch,
    Client,
    FileObject,
    ResponseError,
)
from tests.conftest import MODEL, Server

STATUSES = {"validating", "in_progress", "finalizing", "cancelling"} | TERMINAL_STATUSES


def request_line(custom_id: str, max_tokens: int = 4, **body: Any) -> bytes:
    messages = [{"role": "user", "content": f"Say {custom_id}."}]
    payload = {"model": MODEL, "messages": messages, "max_tokens": max_tokens, **body}
    line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": payload}  # fmt: skip
    return json.dumps(line).encode() + b"\n"


def requests_file(ids: list[str], **body: Any) -> bytes:
    return b"".join(request_line(i, **body) for i in ids)


@pytest.fixture()
def client(server: Server) -> Iterator[Client]:
    with Client(server.url) as c:
        yield c


def test_upload_from_a_path_bytes_and_an_open_file(client: Client, tmp_path: Path) -> None:
    data = requests_file(["a", "b"])
    path = tmp_path / "requests.jsonl"
    path.write_bytes(data)
    from_path = client.files.create(path)
    from_bytes = client.files.create(data, filename="given.jsonl")
    with path.open("rb") as f:
        from_file = client.files.create(f)
    for made in (from_path, from_bytes, from_file):
        assert isinstance(made, FileObject) and made.id.startswith("file-")
        assert made.bytes == len(data) and made.purpose == "batch"
    assert (from_path.filename, from_bytes.filename, from_file.filename) == (
        "requests.jsonl", "given.jsonl", "requests.jsonl",
    )  # fmt: skip
    assert client.files.get(from_bytes.id).filename == "given.jsonl"
    assert client.files.content(from_path.id) == data
    for f in (from_path, from_bytes, from_file):
        assert client.files.delete(f.id).deleted


def test_pages_of_files_and_iterate(client: Client) -> None:
    ids = [client.files.create(request_line(f"p{i}")).id for i in range(3)]
    page = client.files.list(limit=2)
    assert [f.id for f in page.data] == ids[::-1][:2] and page.has_more  # newest first
    assert page.last_id == ids[1]
    every = [f.id for f in client.files.iterate(page_size=1)]
    assert every[:3] == ids[::-1]
    oldest_first = [f.id for f in client.files.iterate(order="asc", page_size=2) if f.id in ids]
    assert oldest_first == ids
    for i in ids:
        client.files.delete(i)


def test_download_streams_to_a_path_and_leaves_nothing_on_a_404(
    client: Client, tmp_path: Path
) -> None:
    data = requests_file([f"d{i}" for i in range(50)])
    made = client.files.create(data)
    dest = tmp_path / "copy.jsonl"
    assert client.files.download(made.id, dest) == len(data)
    assert dest.read_bytes() == data
    client.files.delete(made.id)
    with pytest.raises(ResponseError) as info:
        client.files.download(made.id, tmp_path / "gone.jsonl")
    assert info.value.status_code == 404
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.jsonl"]  # no partial file
    with pytest.raises(ResponseError) as info:
        client.files.get(made.id)
    assert info.value.status_code == 404


def test_an_empty_file_is_refused(client: Client) -> None:
    with pytest.raises(ResponseError) as info:
        client.files.create(b"")
    assert info.value.status_code == 400 and "no lines" in str(info.value)


def test_a_repeated_custom_id_fails_the_batch_naming_the_line(client: Client) -> None:
    uploaded = client.files.create(request_line("same") + request_line("same"))
    batch = client.batches.create(uploaded.id)
    ended = client.batches.wait(batch.id, poll=0.2)
    assert ended.status == "failed" and ended.failed_at and ended.output_file_id is None
    assert ended.errors is not None
    assert [(e.line, e.code) for e in ended.errors.data] == [(2, "duplicate_custom_id")]


def test_an_id_is_required(client: Client) -> None:
    with pytest.raises(ValueError, match="llmux batch list"):
        client.batches.get("")


@pytest.mark.model
def test_create_wait_list_and_read_the_output(client: Client) -> None:
    ids = ["one", "two", "three"]
    uploaded = client.files.create(requests_file(ids) + b"{not json\n")
    tag = uuid.uuid4().hex[:8]
    batch = client.batches.create(uploaded.id, metadata={"tag": tag})
    assert isinstance(batch, Batch) and batch.id.startswith("batch_")
    assert batch.endpoint == "/v1/chat/completions" and batch.input_file_id == uploaded.id
    assert batch.status in STATUSES and batch.metadata == {"tag": tag}

    seen: list[Batch] = []
    done = client.batches.wait(batch.id, poll=0.2, on_progress=seen.append)
    assert done.status == "completed" and done.done
    assert seen[-1] == done and all(b.status in STATUSES for b in seen)
    assert [not b.done for b in seen[:-1]] == [True] * (len(seen) - 1)
    assert done.request_counts.model_dump() == {"total": 4, "completed": 3, "failed": 1}
    assert done.output_file_id and done.error_file_id and done.completed_at

    output = client.files.get(done.output_file_id)
    assert output.purpose == "batch_output"
    lines = [json.loads(x) for x in client.files.content(output.id).splitlines()]
    assert sorted(x["custom_id"] for x in lines) == sorted(ids)
    for x in lines:
        assert x["error"] is None and x["response"]["status_code"] == 200
        assert x["response"]["body"]["object"] == "chat.completion"
    (refused,) = [json.loads(x) for x in client.files.content(done.error_file_id).splitlines()]
    assert refused["response"] is None and refused["error"]["line"] == 4

    page = client.batches.list(limit=1)
    assert page.data[0].id == batch.id and page.first_id == batch.id  # newest first
    assert batch.id in [b.id for b in client.batches.iterate(page_size=1)]
    assert client.batches.get(batch.id) == done


@pytest.mark.model
def test_cancel_stops_a_running_batch(client: Client, no_eos: dict[str, int]) -> None:
    ids = [f"long-{i}" for i in range(24)]
    uploaded = client.files.create(requests_file(ids, max_tokens=400, logit_bias=no_eos))
    batch = client.batches.create(uploaded.id)
    while batch.status == "validating":  # cancel it once its lines run
        time.sleep(0.05)
        batch = client.batches.get(batch.id)
    assert batch.status == "in_progress"
    asked = client.batches.cancel(batch.id)
    assert asked.status in ("cancelling", "cancelled")
    ended = client.batches.wait(batch.id, poll=0.2)
    assert ended.status == "cancelled" and ended.cancelled_at
    counts = ended.request_counts
    assert counts.completed + counts.failed < counts.total == len(ids)


def test_unknown_batch_and_cancelling_an_unknown_one_are_404s(client: Client) -> None:
    for call in (client.batches.get, client.batches.cancel):
        with pytest.raises(ResponseError) as info:
            call("batch_" + "0" * 32)
        assert info.value.status_code == 404


@pytest.mark.model
def test_the_async_client_does_the_same(server: Server, tmp_path: Path) -> None:
    async def go() -> tuple[Batch, bytes, list[str]]:
        async with AsyncClient(server.url) as c:
            uploaded = await c.files.create(requests_file(["x", "y"]))
            batch = await c.batches.create(uploaded.id)
            seen: list[str] = []

            async def show(b: Batch) -> None:
                seen.append(b.status)

            done = await c.batches.wait(batch.id, poll=0.2, on_progress=show)
            assert done.output_file_id
            await c.files.download(done.output_file_id, tmp_path / "out.jsonl")
            listed = [b.id async for b in c.batches.iterate(page_size=1)]
            assert batch.id in listed
            return done, await c.files.content(uploaded.id), seen

    done, content, seen = asyncio.run(go())
    assert done.status == "completed" and seen[-1] == "completed"
    assert content == requests_file(["x", "y"])
    lines = (tmp_path / "out.jsonl").read_bytes().splitlines()
    assert sorted(json.loads(x)["custom_id"] for x in lines) == ["x", "y"]
