"""`llmux pull|push|create|cp|rm|show|stop` against a real server and a real v2
registry on loopback (the commands are registered on a fresh Typer app here)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner, Result

from llmux.cli.models import register
from llmux.models.bundled import bundled_gguf
from tests.conftest import Server, start_server
from tests.support.gguf_variant import write_variant
from tests.support.registry import FakeRegistry, running_registry, tiny_gguf

pytestmark = pytest.mark.model
Run = Callable[..., Result]


@pytest.fixture(scope="module")
def registry() -> Iterator[FakeRegistry]:
    yield from running_registry()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(
        tmp_path_factory.mktemp("cli-home"), extra_env={"LLMUX_ENGINE__NUM_CTX": "1024"}
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cli(srv: Server) -> Iterator[Run]:
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    env = {"LLMUX_HOST": srv.url.removeprefix("http://"), "COLUMNS": "200"}

    def run(*args: str) -> Result:
        return runner.invoke(app, list(args), env=env)

    yield run


def test_create_from_a_modelfile_with_a_local_gguf(cli: Run, srv: Server, tmp_path: Path) -> None:
    source = bundled_gguf()
    assert source is not None
    (tmp_path / "weights").mkdir()
    write_variant(source, tmp_path / "weights" / "course.gguf", {"general.name": "course"})
    (tmp_path / "Modelfile").write_text(
        "FROM ./weights/course.gguf\n"
        "PARAMETER num_predict 2\n"
        "PARAMETER temperature 0\n"
        'SYSTEM """You answer questions about the course."""\n'
        "MESSAGE user Who teaches this?\n"
        "MESSAGE assistant Dr. Rivera.\n"
    )
    result = cli("create", "course", "-f", str(tmp_path / "Modelfile"))
    assert result.exit_code == 0, result.output
    assert "gathering model components" in result.output
    assert "parsing GGUF" in result.output and "success" in result.output

    assert (
        cli("show", "course", "--system").output.strip() == "You answer questions about the course."
    )
    params = cli("show", "course", "--parameters").output
    assert "num_predict" in params and "temperature" in params
    modelfile = cli("show", "course", "--modelfile").output
    assert "MESSAGE assistant" in modelfile and "FROM " in modelfile
    summary = cli("show", "course").output
    assert "architecture" in summary and "llama" in summary and "Parameters" in summary

    reply = httpx.post(
        srv.url + "/api/chat",
        timeout=120,
        json={"model": "course", "messages": [{"role": "user", "content": "Hi"}], "stream": False},
    )
    assert reply.status_code == 200 and reply.json()["eval_count"] <= 2

    # a second create reuses the uploaded blob (the server has it: no upload)
    again = cli("create", "course2", "-f", str(tmp_path / "Modelfile"))
    assert again.exit_code == 0 and "copying file" not in again.output

    assert cli("cp", "course", "course-copy").exit_code == 0
    assert cli("stop", "course").exit_code == 0
    removed = cli("rm", "course-copy", "course2")
    assert removed.exit_code == 0 and "deleted 'course2'" in removed.output
    assert "course-copy:latest" not in httpx.get(srv.url + "/api/tags").text


def test_create_errors_are_one_line(cli: Run, tmp_path: Path) -> None:
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text("FROM ./missing.gguf\n")
    result = cli("create", "x", "-f", str(modelfile))
    assert result.exit_code == 1 and "no such file" in result.output
    modelfile.write_text("FROM smollm2:135m\nPARAMETER bogus 1\n")
    result = cli("create", "x", "-f", str(modelfile))
    assert result.exit_code == 1 and "unknown parameter 'bogus'" in result.output
    modelfile.write_text("FROM not-installed:1b\n")
    result = cli("create", "x", "-f", str(modelfile))
    assert result.exit_code == 1 and "llmux pull not-installed:1b" in result.output
    assert "Traceback" not in result.output


def test_pull_and_push_with_progress(cli: Run, registry: FakeRegistry) -> None:
    registry.publish("library/tiny", "latest", tiny_gguf(500_000), {"system": b"terse"})
    result = cli("pull", f"{registry.host}/library/tiny", "--insecure")
    assert result.exit_code == 0, result.output
    assert "pulling manifest" in result.output and "success" in result.output
    assert "writing manifest" in result.output

    missing = cli("pull", f"{registry.host}/library/none", "--insecure")
    assert missing.exit_code == 1 and "not found" in missing.output

    assert (
        cli("cp", f"{registry.host}/library/tiny", f"{registry.host}/mine/tiny:v2").exit_code == 0
    )
    pushed = cli("push", f"{registry.host}/mine/tiny:v2", "--insecure")
    assert pushed.exit_code == 0, pushed.output
    assert "pushing manifest" in pushed.output
    assert json.loads(registry.manifests[("mine/tiny", "v2")])["layers"][1]["size"] == 5
