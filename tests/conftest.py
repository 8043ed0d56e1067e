"""Shared fixtures: a real llmux server process on loopback with the bundled model, and
a fresh PostgreSQL database on the real server at 127.0.0.1:5432 (trust auth). Where no
PostgreSQL runs, its cases skip, unless LLMUX_TEST_REQUIRE_PG=1 (CI sets it) makes that
a failure."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

MODEL = "smollm2:135m"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    home: Path
    proc: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str]

    def client(self, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, **kw)  # type: ignore[arg-type]

    def stop(self, sig: int | None = None) -> int:
        if self.proc.poll() is None:
            if sig is None:
                self.proc.terminate()
            else:
                self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)


def start_server(
    home: Path,
    *,
    extra_env: dict[str, str] | None = None,
    args: list[str] | None = None,
    port: int | None = None,
    host_env: bool = True,
) -> Server:
    """Start ``llmux serve``; it must answer on ``port`` (LLMUX_HOST unless ``host_env`` is off)."""
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMUX_")}
    env.update({"LLMUX_HOME": str(home), "LLMUX_ENGINE__NUM_THREAD": "2"})
    env["LLMUX_SERVER__DRAIN_S"] = "10"  # stop() waits 30 s: a SIGTERM's drain ends before
    if host_env:
        env["LLMUX_HOST"] = f"127.0.0.1:{port}"
    env.update(extra_env or {})
    ARTIFACTS.mkdir(exist_ok=True)
    log = ARTIFACTS / f"server-{port}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmux", "serve", *(args or [])],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(proc, url + "/", log, 90, "server")
    return Server(url=url, home=home, proc=proc, log=log, env=env)


def wait_ready(
    proc: subprocess.Popen[bytes], probe: str, log: Path, seconds: float, what: str
) -> None:
    """Wait until ``probe`` answers 200; a process that exits, or does not answer in
    ``seconds`` (then it is killed), raises with the end of its ``log``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(probe, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{what} did not get ready in time:\n{log.read_text()[-3000:]}")


def running_server(
    tmp_path_factory: pytest.TempPathFactory, name: str, env: dict[str, str]
) -> Iterator[Server]:
    """Body of a fixture: a server with its own home and ``env``, stopped afterwards."""
    srv = start_server(tmp_path_factory.mktemp(name), extra_env=env)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from running_server(tmp_path_factory, "home", {"LLMUX_ENGINE__KEEP_ALIVE": "30m"})


@pytest.fixture()
def http(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture(scope="session")
def vocab() -> object:
    """The bundled model's tokenizer (llama.cpp, vocabulary only) for token-level tests."""
    from llama_cpp import Llama

    from llmux.models.bundled import bundled_gguf

    path = bundled_gguf()
    assert path is not None
    return Llama(model_path=str(path), vocab_only=True, verbose=False)


@pytest.fixture(scope="session")
def no_eos(vocab: Any) -> dict[str, int]:
    """logit_bias that bans every end-of-generation token, so replies run to max_tokens."""
    ids = {vocab.token_eos()} | {
        t for text in ("<|im_end|>", "<|endoftext|>") for t in vocab.tokenize(text.encode(), add_bos=False, special=True)
    }  # fmt: skip
    return {str(t): -100 for t in ids}


def cancelled_counts(server: Server) -> list[int]:
    """Tokens each cancelled generation had produced, from the server's log."""
    found = re.findall(r"generation cancelled after (\d+) tokens", server.log.read_text())
    return [int(n) for n in found]


PG_ADMIN = os.environ.get("LLMUX_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN.replace("postgresql://", "postgres://"), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def fresh_pg_database(prefix: str = "llmux_test") -> Iterator[str]:
    """Body of a fixture: the URL of a new, empty database, dropped afterwards; a skip
    where no PostgreSQL runs (a failure under LLMUX_TEST_REQUIRE_PG=1)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, ImportError) as exc:
        if os.environ.get("LLMUX_TEST_REQUIRE_PG") == "1":
            raise
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN}: {exc}")
    yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A new, empty database for the session, dropped afterwards."""
    yield from fresh_pg_database()
