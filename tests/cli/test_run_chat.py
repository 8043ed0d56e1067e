"""``llmux run``, ``llmux chat`` and ``llmux conversations`` as a user runs them: real
processes against a real server, found through LLMUX_HOST."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from tests.conftest import MODEL, Server, free_port

FAST = ["-p", "num_predict=8", "-p", "temperature=0", "-p", "seed=1"]


def llmux(*args: str, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmux", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_run_one_shot(server: Server) -> None:
    result = llmux("run", MODEL, "Say", "hi.", *FAST, env=server.env)
    assert result.returncode == 0, result.stderr
    whole = httpx.post(
        server.url + "/api/chat",
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": "Say hi."}],
            "options": {"num_predict": 8, "temperature": 0, "seed": 1},
            "stream": False,
        },
        timeout=60,
    ).json()["message"]["content"]
    assert result.stdout == whole + "\n", "the prompt words are joined; the reply streams out"


def test_run_reads_a_piped_prompt_after_the_argument(server: Server) -> None:
    piped = llmux("run", MODEL, "Summarize:", *FAST, env=server.env, stdin="Cats sleep a lot.\n")
    typed = llmux("run", MODEL, "Summarize:\n\nCats sleep a lot.", *FAST, env=server.env)
    assert piped.returncode == 0 and piped.stdout.strip()
    assert piped.stdout == typed.stdout
    only_piped = llmux("run", MODEL, *FAST, env=server.env, stdin="Say hi.")
    assert only_piped.returncode == 0 and only_piped.stdout.strip()


def test_run_without_any_prompt_from_a_pipe_is_an_error(server: Server) -> None:
    assert "no prompt" in one_line_error(llmux("run", MODEL, env=server.env, stdin=""))


def test_unknown_model_is_one_line(server: Server) -> None:
    expected = "Error: model 'nope' not found, try `llmux pull nope`"
    result = llmux("run", "nope", "hi", env=server.env)
    assert one_line_error(result) == expected and result.stdout == ""
    assert one_line_error(llmux("chat", "nope", env=server.env, stdin="hi\n")) == expected


def test_no_server_is_one_line(tmp_path: Path) -> None:
    host = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "LLMUX_HOST": host, "LLMUX_HOME": str(tmp_path)}
    for args in (["run", MODEL, "hi"], ["chat"], ["conversations", "list"]):
        assert one_line_error(llmux(*args, env=env, stdin="hi\n")) == (
            f"Error: could not reach llmux at http://{host}; start it with `llmux serve`"
        )


def test_bad_option_is_one_line(server: Server) -> None:
    assert "KEY=VALUE" in one_line_error(llmux("run", MODEL, "hi", "-p", "oops", env=server.env))


def test_chat_from_a_pipe_then_conversations_commands(server: Server, tmp_path: Path) -> None:
    word = f"walrus{uuid.uuid4().hex[:6]}"
    script = f"Say {word}.\n/history\n/save Piped {word}\n/bye\nnever sent\n"
    result = llmux("chat", MODEL, *FAST, env=server.env, stdin=script)
    assert result.returncode == 0, result.stderr
    assert f"user: Say {word}.\n\nassistant: " in result.stdout
    assert ">>>" not in result.stdout, "no prompts when stdin is not a terminal"
    cid = result.stdout.split("Saved conversation ")[1].split()[0]

    listed = llmux("conversations", "list", "--search", word, env=server.env)
    assert listed.returncode == 0 and cid in listed.stdout and f"Piped {word}" in listed.stdout

    shown = llmux("conversations", "show", cid, env=server.env)
    assert shown.returncode == 0 and f"Say {word}." in shown.stdout and "assistant:" in shown.stdout

    md = llmux("conversations", "export", cid, env=server.env)
    assert md.returncode == 0 and md.stdout.startswith(f"# Piped {word}")
    target = tmp_path / "c.json"
    exported = llmux(
        "conversations", "export", cid, "-f", "json", "-o", str(target), env=server.env
    )
    assert exported.returncode == 0, exported.stderr
    data = json.loads(target.read_text())
    assert data["id"] == cid and [m["role"] for m in data["messages"]] == ["user", "assistant"]
    assert "unknown format" in one_line_error(
        llmux("conversations", "export", cid, "-f", "yaml", env=server.env)
    )

    assert llmux("conversations", "rm", cid, env=server.env).returncode == 0
    gone = one_line_error(llmux("conversations", "show", cid, env=server.env))
    assert gone.startswith("Error: conversation") and cid in gone and "not found" in gone


def test_chat_without_a_model_uses_the_first_listed(server: Server) -> None:
    result = llmux("chat", env=server.env, stdin="/model\n")
    first = httpx.get(server.url + "/api/tags").json()["models"][0]["name"]
    assert result.returncode == 0 and result.stdout.strip() == f"Model: {first} (/model NAME)"
