"""The Batch API on real processes, through the official openai SDK: batches on the
bundled model and on an upstream (a second ``llmux serve``), chat and embeddings; a
server killed with SIGKILL in the middle of a 2,000-line batch and started again; two
replicas sharing PostgreSQL working batches without running a line twice.

The long batches run on a scripted upstream that takes 20 ms a call and counts the
calls per line, which is what shows that no line ran twice (the model would take
minutes for 2,000 lines on two cores, and cannot count)."""

from __future__ import annotations

import json
import signal
import sqlite3
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.batch.test_batches import jsonl, wait
from tests.conftest import MODEL, Server, start_server
from tests.support.scrape import scrape, value
from tests.upstream.scripted import Scripted

LEASE = {"lease_s": 3.0, "check_s": 0.5, "poll_s": 0.5}


def config(home: Path, upstreams: str, database: str | None = None, **batch: Any) -> dict[str, str]:  # fmt: skip
    settings = {**LEASE, **batch}
    text = "[engine]\nnum_parallel = 4\n[batch]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items())  # fmt: skip
    if database:
        text += f'[storage]\ndatabase_url = "{database}"\n'
    path = home / "llmux.toml"
    path.write_text(text + textwrap.dedent(upstreams))
    return {"LLMUX_CONFIG": str(path), "LLMUX_ENGINE__KEEP_ALIVE": "30m"}


def scripted_upstream(url: str) -> str:
    return f"""
    [[upstreams]]
    name = "scripted"
    type = "openai"
    url = "{url}/v1"
    models = ["paced-batch"]
    health_interval_s = 0
    """


def sdk(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def chat_line(cid: str, model: str, max_tokens: int = 4) -> dict[str, Any]:
    body = {"model": model, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": f"label {cid}"}]}  # fmt: skip
    return {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": body}


def embed_line(cid: str, model: str) -> dict[str, Any]:
    body = {"model": model, "input": f"ticket {cid} about an invoice"}
    return {"custom_id": cid, "method": "POST", "url": "/v1/embeddings", "body": body}


def run_batch(oa: openai.OpenAI, lines: list[dict[str, Any]], endpoint: str) -> Any:
    made = oa.files.create(file=("in.jsonl", jsonl(*lines)), purpose="batch")
    batch = oa.batches.create(input_file_id=made.id, endpoint=endpoint, completion_window="24h")  # type: ignore[arg-type]
    return batch


def output(oa: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    return [json.loads(x) for x in oa.files.content(file_id).read().splitlines()]


@pytest.fixture(scope="module")
def scripted() -> Iterator[Scripted]:
    s = Scripted().start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, scripted: Scripted) -> Iterator[Server]:
    up = start_server(tmp_path_factory.mktemp("batch-up"), extra_env={"LLMUX_ENGINE__NUM_PARALLEL": "4"})  # fmt: skip
    home = tmp_path_factory.mktemp("batch-gw")
    upstreams = (
        scripted_upstream(scripted.url)
        + f"""
    [[upstreams]]
    name = "second"
    type = "openai"
    url = "{up.url}/v1"
    models = {{ "up-smol" = "{MODEL}" }}
    """
    )
    srv = start_server(home, extra_env=config(home, upstreams))
    yield srv
    srv.stop()
    up.stop()


@pytest.mark.parametrize("model", [MODEL, "up-smol"])
def test_chat_and_embeddings_batches_on_the_model_and_an_upstream(gateway: Server, model: str) -> None:  # fmt: skip
    oa = sdk(gateway)
    for endpoint, make in (("/v1/chat/completions", chat_line), ("/v1/embeddings", embed_line)):
        lines = [make(f"{endpoint[4:9]}-{i}", model) for i in range(4)]
        done = wait(oa, run_batch(oa, lines, endpoint).id, "completed", "failed", within=120)
        assert done.status == "completed", done
        counts = done.request_counts
        assert counts is not None and (counts.total, counts.completed, counts.failed) == (4, 4, 0)
        out = output(oa, done.output_file_id)
        assert sorted(x["custom_id"] for x in out) == sorted(x["custom_id"] for x in lines)
        for x in out:
            assert x["response"]["status_code"] == 200
            body = x["response"]["body"]
            if endpoint == "/v1/embeddings":
                assert len(body["data"][0]["embedding"]) > 10
            else:
                assert body["choices"][0]["message"]["role"] == "assistant"
                assert 1 <= body["usage"]["completion_tokens"] <= 4
        assert done.usage is not None and done.usage.input_tokens > 0
    with gateway.client() as http:
        samples = scrape(http)
    assert value(samples, "llmux_batch_lines_completed_total") >= 8
    assert value(samples, "llmux_batches_running") == 0
    assert value(samples, "llmux_requests_total", route="/v1/embeddings") >= 4  # lines are requests


def test_sigkill_in_the_middle_of_a_2000_line_batch(tmp_path: Path, scripted: Scripted) -> None:
    """Killed with about a fifth done, started again: the batch finishes with each of
    the 2,000 custom_ids exactly once, and no line recorded before the kill runs again
    (lines in flight when it died run again: they never finished)."""
    env = config(tmp_path, scripted_upstream(scripted.url), concurrency=8)
    lines = [chat_line(f"k-{i}", "paced-batch") for i in range(2000)]
    first = start_server(tmp_path, extra_env=env)
    oa = sdk(first)
    batch = run_batch(oa, lines, "/v1/chat/completions")
    end = time.monotonic() + 120
    while (oa.batches.retrieve(batch.id).request_counts or _zero()).completed < 400:
        assert time.monotonic() < end, "the batch did not get going"
        time.sleep(0.1)
    first.stop(signal.SIGKILL)
    with sqlite3.connect(tmp_path / "llmux.db") as db:
        recorded = {r[0] for r in db.execute("SELECT custom_id FROM batch_lines WHERE batch_id = ?", (batch.id,))}  # fmt: skip
    assert 400 <= len(recorded) < 2000
    second = start_server(tmp_path, extra_env=env)
    try:
        oa = sdk(second)
        done = wait(oa, batch.id, "completed", "failed", within=240)
        assert done.status == "completed"
        counts = done.request_counts
        assert counts is not None and (counts.total, counts.completed, counts.failed) == (
            2000,
            2000,
            0,
        )
        ids = [x["custom_id"] for x in output(oa, done.output_file_id)]
        assert len(ids) == 2000 and set(ids) == {x["custom_id"] for x in lines}
        asked = {cid: scripted.asked[f"label {cid}"] for cid in ids}
        assert all(n >= 1 for n in asked.values())
        assert [cid for cid in recorded if asked[cid] != 1] == []
    finally:
        second.stop()


def _zero() -> Any:
    class Zero:
        completed = 0

    return Zero()


def test_two_replicas_sharing_postgresql_run_each_line_once(
    tmp_path_factory: pytest.TempPathFactory, scripted: Scripted, pg_url: str
) -> None:
    """Three batches of 300 lines made on either replica (each file uploaded to the
    other one: the bytes are in the database); both replicas work, every line runs
    exactly once."""
    servers = []
    for name in ("rep-a", "rep-b"):
        home = tmp_path_factory.mktemp(name)
        env = config(home, scripted_upstream(scripted.url), pg_url, concurrency=4, poll_s=0.3)
        servers.append(start_server(home, extra_env=env))
    try:
        made = []
        for n in range(3):
            up, maker = sdk(servers[n % 2]), sdk(servers[(n + 1) % 2])
            lines = [chat_line(f"r{n}-{i}", "paced-batch") for i in range(300)]
            source = up.files.create(file=(f"in{n}.jsonl", jsonl(*lines)), purpose="batch")
            made.append(maker.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"))  # fmt: skip
        for n, batch in enumerate(made):
            oa = sdk(servers[n % 2])
            done = wait(oa, batch.id, "completed", "failed", within=240)
            assert done.status == "completed", done.errors
            ids = [x["custom_id"] for x in output(oa, done.output_file_id)]
            assert sorted(ids) == sorted(f"r{n}-{i}" for i in range(300))
            assert {scripted.asked[f"label {cid}"] for cid in ids} == {1}
        for srv in servers:
            assert "working it" in srv.log.read_text(), "each replica worked a batch"
    finally:
        for srv in servers:
            srv.stop()
