"""/v1/batches through the official openai SDK, in process around a fake backend: the
lifecycle, output and error files, validation, cancel, pages, bad input and owners. The
real model, upstreams, restarts and replicas are in test_batches_e2e.py."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.auth.test_access import bearer, call, key_for
from tests.batch.test_files import client
from tests.support.fakes import FakeBackend
from tests.support.inprocess import in_process

QUICK = {"check_s": 0.1, "lease_s": 1.0, "poll_s": 0.1}
CHAT = "/v1/chat/completions"


def request(cid: str, url: str = CHAT, model: str = "fake:latest", **extra: Any) -> dict[str, Any]:
    if url == "/v1/embeddings":
        body: dict[str, Any] = {"model": model, "input": f"text of {cid}"}
    else:
        body = {"model": model, "messages": [{"role": "user", "content": f"ticket {cid}"}]}
    return {"custom_id": cid, "method": "POST", "url": url, "body": body, **extra}


def jsonl(*lines: dict[str, Any] | bytes) -> bytes:
    return b"".join(x if isinstance(x, bytes) else json.dumps(x).encode() + b"\n" for x in lines)


def wait(oa: openai.OpenAI, batch_id: str, *statuses: str, within: float = 30.0) -> Any:
    """Poll until the batch reaches one of ``statuses`` (a deadline, not a timing test)."""
    end = time.monotonic() + within
    while True:
        batch = oa.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        assert time.monotonic() < end, f"batch stayed {batch.status}"
        time.sleep(0.05)


def lines_of(oa: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(x) for x in oa.files.content(file_id).read().splitlines()]


def submit(oa: openai.OpenAI, data: bytes, endpoint: str = CHAT) -> Any:
    made = oa.files.create(file=("requests.jsonl", data), purpose="batch")
    return oa.batches.create(input_file_id=made.id, endpoint=endpoint, completion_window="24h")  # type: ignore[arg-type]


def test_a_chat_batch_runs_to_completed_with_one_output_line_per_custom_id(tmp_path: Path) -> None:
    with in_process(tmp_path, batch=QUICK) as app:
        oa = client(app)
        made = oa.files.create(file=("r.jsonl", jsonl(*(request(f"t-{i}") for i in range(5)))), purpose="batch")  # fmt: skip
        batch = oa.batches.create(
            input_file_id=made.id,
            endpoint=CHAT,
            completion_window="24h",
            metadata={"job": "labels"},
        )
        assert batch.id.startswith("batch_") and batch.status == "validating"
        assert batch.metadata == {"job": "labels"} and batch.expires_at == batch.created_at + 86400
        done = wait(oa, batch.id, "completed", "failed")
        assert done.status == "completed" and done.error_file_id is None
        counts = done.request_counts
        assert counts is not None and (counts.total, counts.completed, counts.failed) == (5, 5, 0)
        assert done.in_progress_at and done.finalizing_at and done.completed_at
        assert done.in_progress_at <= done.finalizing_at <= done.completed_at
        out = lines_of(oa, done.output_file_id)
        assert sorted(x["custom_id"] for x in out) == [f"t-{i}" for i in range(5)]
        for x in out:
            assert x["id"].startswith("batch_req_") and x["error"] is None
            assert x["response"]["status_code"] == 200
            assert x["response"]["body"]["object"] == "chat.completion"
            assert x["response"]["request_id"]
        assert oa.files.retrieve(done.output_file_id).purpose == "batch_output"
        assert done.usage is not None and done.usage.output_tokens > 0
        assert {c.ctx.priority for c in app.backend.calls_of("chat")} == {"batch"}


def test_an_embeddings_batch(tmp_path: Path) -> None:
    with in_process(tmp_path, batch=QUICK) as app:
        oa = client(app)
        batch = submit(oa, jsonl(*(request(f"e-{i}", "/v1/embeddings") for i in range(3))), "/v1/embeddings")  # fmt: skip
        done = wait(oa, batch.id, "completed", "failed")
        out = {x["custom_id"]: x["response"]["body"] for x in lines_of(oa, done.output_file_id)}
        assert sorted(out) == ["e-0", "e-1", "e-2"]
        assert all(b["object"] == "list" and b["data"][0]["embedding"] for b in out.values())


def test_bad_lines_go_to_the_error_file_naming_their_lines(tmp_path: Path) -> None:
    bad = request("bad-body")
    bad["body"]["temperature"] = 5
    data = jsonl(
        request("good-1"),
        b"{not json\n",
        request("wrong-url", "/v1/embeddings"),
        request("no-model", model="absent:1b"),
        {"custom_id": "no-body", "method": "POST", "url": CHAT},
        bad,
        b"\n",
        request("good-2"),
    )
    with in_process(tmp_path, batch=QUICK) as app:
        oa = client(app)
        done = wait(oa, submit(oa, data).id, "completed", "failed")
        assert done.status == "completed"
        counts = done.request_counts
        assert counts is not None and (counts.total, counts.completed, counts.failed) == (7, 2, 5)
        assert sorted(x["custom_id"] for x in lines_of(oa, done.output_file_id)) == ["good-1", "good-2"]  # fmt: skip
        errors = lines_of(oa, done.error_file_id)
        never_ran = {x["error"]["line"]: x for x in errors if x["response"] is None}
        assert (
            never_ran[2]["error"]["code"] == "invalid_json_line"
            and never_ran[2]["custom_id"] is None
        )
        assert never_ran[3]["error"]["code"] == "mismatched_endpoint"
        assert never_ran[5]["custom_id"] == "no-body"
        answered = {x["custom_id"]: x["response"] for x in errors if x["response"] is not None}
        assert answered["no-model"]["status_code"] == 404
        assert answered["no-model"]["body"]["error"]["code"] == "model_not_found"
        assert answered["bad-body"]["status_code"] == 400
        assert answered["bad-body"]["body"]["error"]["type"] == "invalid_request_error"


def test_a_file_with_duplicate_or_missing_custom_ids_fails_validation(tmp_path: Path) -> None:
    data = jsonl(request("a"), request("b"), request("a"), {"method": "POST", "url": CHAT, "body": {}})  # fmt: skip
    with in_process(tmp_path, batch=QUICK) as app:
        oa = client(app)
        done = wait(oa, submit(oa, data).id, "failed", "completed")
        assert done.status == "failed" and done.failed_at and done.output_file_id is None
        assert done.errors is not None and done.errors.data is not None
        found = [(e.code, e.line) for e in done.errors.data]
        assert found == [("duplicate_custom_id", 3), ("missing_custom_id", 4)]
        assert all(e.message and e.param == "custom_id" for e in done.errors.data)
        assert not app.backend.calls_of("chat"), "no line of a failed batch runs"


def test_cancel_keeps_the_lines_that_finished(tmp_path: Path) -> None:
    backend = FakeBackend()
    for _ in range(200):
        backend.reply("a", "b", delay_s=0.05)
    with in_process(tmp_path, backend=backend, batch={**QUICK, "concurrency": 2}) as app:
        oa = client(app)
        batch = submit(oa, jsonl(*(request(f"c-{i}") for i in range(100))))
        end = time.monotonic() + 30
        while (oa.batches.retrieve(batch.id).request_counts or _none()).completed < 4:
            assert time.monotonic() < end
            time.sleep(0.05)
        cancelling = oa.batches.cancel(batch.id)
        assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at
        done = wait(oa, batch.id, "cancelled")
        assert done.cancelled_at and done.cancelled_at >= (done.cancelling_at or 0)
        counts = done.request_counts
        assert counts is not None and counts.total == 100 and 4 <= counts.completed < 100
        out = lines_of(oa, done.output_file_id)
        assert len(out) == counts.completed == len({x["custom_id"] for x in out})
        ran = len(app.backend.calls_of("chat"))
        time.sleep(0.3)
        assert len(app.backend.calls_of("chat")) == ran, "no line starts after the cancel"
        assert oa.batches.cancel(batch.id).status == "cancelled"  # again: as it is


def _none() -> Any:
    class Zero:
        completed = 0

    return Zero()


def test_pages_and_bad_requests(tmp_path: Path) -> None:
    with in_process(tmp_path, batch={**QUICK, "worker": False}) as app:
        oa = client(app)
        ids = [submit(oa, jsonl(request("x"))).id for _ in range(3)]
        page = oa.batches.list(limit=2)
        assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more
        assert [b.id for b in oa.batches.list(limit=2, after=page.data[-1].id).data] == ids[:1]
        assert [b.id for b in oa.batches.list()] == ids[::-1]  # the SDK follows the pages
        assert oa.batches.retrieve(ids[0]).status == "validating"  # no worker here
        made = oa.files.create(file=("r.jsonl", jsonl(request("x"))), purpose="batch")
        fine = {"input_file_id": made.id, "endpoint": CHAT, "completion_window": "24h"}
        bad = [
            ({**fine, "endpoint": "/v1/images"}, 400, "endpoint"),
            ({**fine, "completion_window": "1h"}, 400, "completion_window"),
            ({**fine, "input_file_id": "file-absent"}, 404, "file_id"),
            ({**fine, "metadata": {"k": "v" * 513}}, 400, "metadata"),
            ({**fine, "metadata": {f"k{i}": "v" for i in range(17)}}, 400, "metadata"),
            ({"endpoint": CHAT}, 400, None),
        ]
        for body, status, param in bad:
            r = app.client.post("/v1/batches", json=body)
            assert r.status_code == status, body
            assert r.json()["error"]["param"] == param
        assert app.client.post("/v1/batches", content=b"{").status_code == 400
        assert app.client.get("/v1/batches", params={"limit": 0}).status_code == 400
        assert app.client.get("/v1/batches/batch_absent").status_code == 404
        assert app.client.post("/v1/batches/batch_absent/cancel").status_code == 404


def test_a_finished_batch_cannot_be_cancelled_and_output_cannot_feed_a_batch(
    tmp_path: Path,
) -> None:
    with in_process(tmp_path, batch=QUICK) as app:
        oa = client(app)
        done = wait(oa, submit(oa, jsonl(request("x"))).id, "completed")
        r = app.client.post(f"/v1/batches/{done.id}/cancel")
        assert r.status_code == 409 and "completed" in r.json()["error"]["message"]
        body = {"input_file_id": done.output_file_id, "endpoint": CHAT, "completion_window": "24h"}
        r = app.client.post("/v1/batches", json=body)
        assert r.status_code == 400 and r.json()["error"]["param"] == "input_file_id"


def test_other_users_batches_are_not_found(tmp_path: Path) -> None:
    with in_process(tmp_path, auth={"mode": "on", "max_failures": 1000}, batch=QUICK) as app:
        alice = call(app, app.access.add_user, "alice", "correct horse battery", "user")
        bob = call(app, app.access.add_user, "bob", "correct horse battery", "user")
        a, b = key_for(app, alice), key_for(app, bob)
        done = wait(client(app, a), submit(client(app, a), jsonl(request("x"))).id, "completed")
        for path in (f"/v1/batches/{done.id}", f"/v1/files/{done.output_file_id}/content"):
            assert app.client.get(path, headers=bearer(b)).status_code == 404
        assert app.client.post(f"/v1/batches/{done.id}/cancel", headers=bearer(b)).status_code == 404  # fmt: skip
        assert client(app, b).batches.list().data == []
        assert [x.id for x in client(app, a).batches.list()] == [done.id]
        made = client(app, a).files.create(file=("r.jsonl", jsonl(request("y"))), purpose="batch")
        body = {"input_file_id": made.id, "endpoint": CHAT, "completion_window": "24h"}
        assert app.client.post("/v1/batches", json=body, headers=bearer(b)).status_code == 404
        no_batch = key_for(app, alice, scopes=frozenset({"inference"}))
        assert app.client.get("/v1/batches", headers=bearer(no_batch)).status_code == 403
        # the lines ran as alice: her key's principal
        ctx = app.backend.calls_of("chat")[0].ctx
        assert ctx.principal.user_id == alice.id and ctx.priority == "batch"


@pytest.mark.parametrize("endpoint", ["/v1/completions", "/v1/moderations"])
def test_other_endpoints(tmp_path: Path, endpoint: str) -> None:
    body: dict[str, Any] = {"model": "fake:latest", "prompt": "Once"} if endpoint == "/v1/completions" else {"input": "hello"}  # fmt: skip
    line = {"custom_id": "one", "method": "POST", "url": endpoint, "body": body}
    with in_process(tmp_path, batch=QUICK) as app:
        oa = client(app)
        done = wait(oa, submit(oa, jsonl(line), endpoint).id, "completed")
        (out,) = lines_of(oa, done.output_file_id)
        assert out["response"]["status_code"] == 200
        kind = out["response"]["body"].get("object") or "results"
        assert kind in ("text_completion", "results") and (kind != "results" or out["response"]["body"]["results"])  # fmt: skip


def test_a_short_batch_does_not_wait_for_a_long_one(tmp_path: Path) -> None:
    backend = FakeBackend(model_names=("fake:latest", "slow:latest"))
    for _ in range(1000):  # 50 s of lines one at a time: the short batch is done long before
        backend.reply("a", delay_s=0.05)
    with in_process(tmp_path, backend=backend, batch={**QUICK, "concurrency": 1}) as app:
        oa = client(app)
        long = submit(oa, jsonl(*(request(f"l-{i}") for i in range(1000))))
        wait(oa, long.id, "in_progress")
        short = submit(oa, jsonl(request("s-1")))
        assert wait(oa, short.id, "completed").status == "completed"
        assert oa.batches.retrieve(long.id).status == "in_progress"
        oa.batches.cancel(long.id)
        wait(oa, long.id, "cancelled")


def test_revoking_the_key_that_made_a_batch_cancels_it(tmp_path: Path) -> None:
    backend = FakeBackend()
    for _ in range(100):
        backend.reply("a", delay_s=0.05)
    settings = {"auth": {"mode": "on", "max_failures": 1000}, "batch": {**QUICK, "concurrency": 1}}
    with in_process(tmp_path, backend=backend, **settings) as app:
        alice = call(app, app.access.add_user, "alice", "correct horse battery", "user")
        key, text = call(app, app.access.create_key, alice)
        oa = client(app, text)
        batch = submit(oa, jsonl(*(request(f"r-{i}") for i in range(100))))
        wait(oa, batch.id, "in_progress")
        call(app, app.access.revoke_key, key.id)
        other = client(app, key_for(app, alice))  # her other key still sees her batch
        done = wait(other, batch.id, "cancelled")
        assert done.errors is not None and done.errors.data is not None
        assert [e.code for e in done.errors.data] == ["credential_revoked"]
        assert "revoked" in (done.errors.data[0].message or "")
        counts = done.request_counts
        assert counts is not None and counts.completed < 100


def test_a_50000_line_file_validates(tmp_path: Path) -> None:
    lines = [request(f"t-{i}") for i in range(50_000)]
    with in_process(tmp_path, batch={**QUICK, "concurrency": 1}) as app:
        oa = client(app)
        running = wait(oa, submit(oa, jsonl(*lines)).id, "in_progress", "failed", within=120)
        assert running.status == "in_progress"
        assert running.request_counts is not None and running.request_counts.total == 50_000
        oa.batches.cancel(running.id)
        wait(oa, running.id, "cancelled")
        lines[-1] = request("t-7")  # the last line repeats the eighth: found at the end
        failed = wait(oa, submit(oa, jsonl(*lines)).id, "failed", "in_progress", within=120)
        assert failed.errors is not None and failed.errors.data is not None
        assert [(e.code, e.line) for e in failed.errors.data] == [("duplicate_custom_id", 50_000)]
