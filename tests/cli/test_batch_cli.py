"""``llmux batch`` as a user runs it: real processes, real HTTP, the bundled model. No
assertion reads what the model wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from llmux.cli.batch import Pace, errors_path, guess_endpoint
from llmux.client import Client
from tests.conftest import MODEL, Server, free_port

BAD_ID = "batch_" + "0" * 32


def run_cli(*args: str, env: dict[str, str], cwd: Path | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "llmux", "batch", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def line(custom_id: str, url: str = "/v1/chat/completions", **body: Any) -> str:
    if url == "/v1/embeddings":
        payload: dict[str, Any] = {"model": MODEL, "input": f"ticket {custom_id}"}
    else:
        messages = [{"role": "user", "content": f"Label ticket {custom_id}."}]
        payload = {"model": MODEL, "messages": messages, "max_tokens": 4, **body}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": payload})


def write(path: Path, *lines: str) -> Path:
    path.write_text("".join(x + "\n" for x in lines))
    return path


def one_line_error(result: subprocess.CompletedProcess[str], *found: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for text in found:
        assert text in result.stderr, result.stderr


# -- without a server ------------------------------------------------------------------


def test_the_endpoint_is_guessed_from_the_first_line(tmp_path: Path) -> None:
    embed = write(tmp_path / "e.jsonl", "", line("a", "/v1/embeddings"), line("b"))
    assert guess_endpoint(embed) == "/v1/embeddings"
    assert guess_endpoint(write(tmp_path / "x.jsonl", "{not json")) == "/v1/chat/completions"
    assert guess_endpoint(write(tmp_path / "n.jsonl", '{"custom_id": "a"}')) == (
        "/v1/chat/completions"
    )


def test_names_and_numbers() -> None:
    assert errors_path(Path("out/results.jsonl")) == Path("out/results.errors.jsonl")
    assert errors_path(Path("results")) == Path("results.errors.jsonl")
    assert Pace.text(None, 10) == ("- lines/s", "ETA -")
    assert Pace.text(2.0, 7200) == ("2.0 lines/s", "ETA 1:00:00")
    assert Pace.text(0.1, 3) == ("6.0 lines/min", "ETA 0:00:30")
    clock = iter([10.0, 12.0, 14.0]).__next__
    pace = Pace(clock=clock)
    assert (pace.rate(4), pace.rate(8), pace.rate(12)) == (None, 2.0, 2.0)


def test_no_server_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "LLMUX_HOST": f"127.0.0.1:{free_port()}", "LLMUX_HOME": str(tmp_path)}
    one_line_error(run_cli("list", env=env), "could not reach llmux", "llmux serve")
    requests = write(tmp_path / "r.jsonl", line("a"))
    one_line_error(run_cli("submit", str(requests), env=env), "could not reach llmux")
    one_line_error(run_cli("list", "--host", "127.0.0.1:notaport", env=env), "invalid port")


# -- against the server ----------------------------------------------------------------


def test_unknown_ids_missing_files_and_bad_metadata(server: Server, tmp_path: Path) -> None:
    for command in ("status", "cancel", "download"):
        result = run_cli(command, BAD_ID, env=server.env, cwd=tmp_path)
        one_line_error(result, f"no batch with id '{BAD_ID}'", "`llmux batch list`")
    assert list(tmp_path.iterdir()) == []  # download wrote nothing
    one_line_error(run_cli("submit", str(tmp_path / "nope.jsonl"), env=server.env), "not a file")
    requests = write(tmp_path / "r.jsonl", line("a"))
    result = run_cli("submit", str(requests), "-m", "novalue", env=server.env)
    one_line_error(result, "KEY=VALUE")
    one_line_error(run_cli("submit", str(write(tmp_path / "e.jsonl")), env=server.env), "no lines")
    result = run_cli("submit", str(requests), "-o", str(tmp_path / "no" / "out.jsonl"), env=server.env)  # fmt: skip
    one_line_error(result, "does not exist")
    with Client(server.url) as c:  # the check came before the upload
        assert "r.jsonl" not in [f.filename for f in c.files.list(limit=5).data]


def test_a_batch_that_fails_validation(server: Server, tmp_path: Path) -> None:
    """The endpoint comes from the first line; --wait shows why it failed and exits 1."""
    requests = write(tmp_path / "dup.jsonl", line("same", "/v1/embeddings"),
                     line("same", "/v1/embeddings"))  # fmt: skip
    result = run_cli("submit", str(requests), "--wait", "--poll", "0.2", env=server.env)
    one_line_error(result, "failed", "line 2: duplicate_custom_id", "/v1/embeddings")
    batch_id = result.stdout.strip()
    assert batch_id.startswith("batch_")
    status = run_cli("status", batch_id, env=server.env)
    assert status.returncode == 0 and "failed" in status.stdout
    assert "line 2: duplicate_custom_id" in status.stdout
    result = run_cli("download", batch_id, env=server.env, cwd=tmp_path)
    one_line_error(result, "has no output file")


def test_list_takes_host_and_pages(server: Server, tmp_path: Path) -> None:
    env = {k: v for k, v in server.env.items() if k != "LLMUX_HOST"}
    requests = write(tmp_path / "dup.jsonl", line("x"), line("x"))  # fails validation at once
    ids = [run_cli("submit", str(requests), "--host", server.url, env=env).stdout.strip()
           for _ in range(2)]  # fmt: skip
    assert all(i.startswith("batch_") for i in ids)
    listed = run_cli("list", "--limit", "1", "--host", server.url, env=env)
    assert listed.returncode == 0 and ids[1] in listed.stdout and ids[0] not in listed.stdout
    assert f"llmux batch list --after {ids[1]}" in listed.stdout
    older = run_cli("list", "--after", ids[1], "--host", server.url, env=env)
    assert ids[0] in older.stdout and ids[1] not in older.stdout


@pytest.mark.model
def test_submit_wait_output_then_status_list_download(server: Server, tmp_path: Path) -> None:
    ids = ["t-1", "t-2", "t-3"]
    requests = write(tmp_path / "tickets.jsonl", *(line(i) for i in ids))
    out = tmp_path / "results.jsonl"
    result = run_cli("submit", str(requests), "--wait", "--output", str(out), "--poll", "0.2",
                     "-m", "team=qa", env=server.env, timeout=240)  # fmt: skip
    assert result.returncode == 0, result.stderr
    batch_id = result.stdout.strip()  # the id, alone on stdout
    assert batch_id.startswith("batch_") and "\n" not in batch_id
    assert "3 total, 3 completed, 0 failed" in result.stderr and f"wrote {out}" in result.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(x["custom_id"] for x in lines) == ids
    assert all(x["response"]["status_code"] == 200 and x["error"] is None for x in lines)
    assert not errors_path(out).exists()  # nothing failed

    status = run_cli("status", batch_id, env=server.env)
    assert status.returncode == 0
    for text in ("completed", "3 total, 3 completed, 0 failed", "team=qa", "/v1/chat/completions"):  # fmt: skip
        assert text in status.stdout
    listed = run_cli("list", env=server.env)
    assert listed.returncode == 0 and batch_id in listed.stdout and "3/3" in listed.stdout
    copy = run_cli("download", batch_id, env=server.env, cwd=tmp_path)
    assert copy.returncode == 0 and (tmp_path / f"{batch_id}.jsonl").read_bytes() == out.read_bytes()  # fmt: skip
    one_line_error(run_cli("download", batch_id, "--errors", env=server.env), "no errors file")
    one_line_error(run_cli("cancel", batch_id, env=server.env), "can be cancelled")


@pytest.mark.model
def test_failed_lines_are_written_beside_the_output(server: Server, tmp_path: Path) -> None:
    other = line("bad", "/v1/embeddings")  # not this batch's endpoint: the line fails alone
    requests = write(tmp_path / "mixed.jsonl", line("ok-1"), other, line("ok-2"))
    out = tmp_path / "mixed-out.jsonl"
    result = run_cli("submit", str(requests), "-o", str(out), "--poll", "0.2",
                     env=server.env, timeout=240)  # fmt: skip
    assert result.returncode == 0, result.stderr  # the batch completed; one line failed
    assert "1 failed" in result.stderr
    assert sorted(json.loads(x)["custom_id"] for x in out.read_text().splitlines()) == ["ok-1", "ok-2"]  # fmt: skip
    (refused,) = [json.loads(x) for x in errors_path(out).read_text().splitlines()]
    assert refused["custom_id"] == "bad" and refused["response"] is None
    assert refused["error"]["line"] == 2 and refused["error"]["code"] == "mismatched_endpoint"


@pytest.mark.model
def test_cancel_ends_a_waiting_submit_with_status_1(
    server: Server, tmp_path: Path, no_eos: dict[str, int]
) -> None:
    ids = [f"long-{i}" for i in range(24)]
    requests = write(tmp_path / "long.jsonl",
                     *(line(i, max_tokens=400, logit_bias=no_eos) for i in ids))  # fmt: skip
    waiting = subprocess.Popen(
        [sys.executable, "-m", "llmux", "batch", "submit", str(requests), "--wait", "--poll", "0.2"],
        env={**server.env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert waiting.stdout is not None
        batch_id = waiting.stdout.readline().strip()
        assert batch_id.startswith("batch_")
        early = run_cli("download", batch_id, env=server.env, cwd=tmp_path)
        one_line_error(early, "its files are written when it ends")
        with Client(server.url) as c:
            while c.batches.get(batch_id).status == "validating":  # cancel it as its lines run
                time.sleep(0.05)
        cancelled = run_cli("cancel", batch_id, env=server.env)
        assert cancelled.returncode == 0, cancelled.stderr
        assert cancelled.stdout.split() in ([batch_id, "cancelling"], [batch_id, "cancelled"])
        _, stderr = waiting.communicate(timeout=240)
    finally:
        waiting.kill()
        waiting.wait()
    assert waiting.returncode == 1 and f"batch {batch_id} cancelled" in stderr
    assert "Traceback" not in stderr
    with Client(server.url) as c:
        ended = c.batches.get(batch_id)
    assert ended.status == "cancelled"
    assert ended.request_counts.completed < ended.request_counts.total == len(ids)
