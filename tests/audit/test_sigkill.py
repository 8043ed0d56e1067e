"""SIGKILL in the middle of a load loses no record of a request that got its whole
response: a real ``llmux serve`` in front of the scripted upstream (the relay fast path
and the translating path, streamed and not) takes requests from 8 threads; it is killed
mid-load, started again on the same home, and the trail then holds a record of every
request whose response the client received complete, by its X-Request-Id, and its
chain verifies."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import start_server
from tests.upstream.scripted import Scripted

THREADS = 8


@pytest.fixture(scope="module")
def scripted() -> Iterator[Scripted]:
    server = Scripted().start()
    yield server
    server.stop()


def config(home: Path, upstream: str) -> Path:
    path = home / "llmux.toml"
    path.write_text(f"""
[store]
bundled_model = ""

[[upstreams]]
name = "fast"
type = "ollama"
url = "{upstream}"
models = ["kill-fast"]

[[upstreams]]
name = "pool"
type = "ollama"
url = "{upstream}"
models = ["kill-pool"]
fast_path = false
""")
    return path


REQUESTS = [
    ("/api/chat", {"model": "kill-fast", "stream": True}),
    ("/api/chat", {"model": "kill-fast", "stream": False}),
    ("/api/chat", {"model": "kill-pool", "stream": False}),
    ("/v1/chat/completions", {"model": "kill-pool", "stream": True}),
    ("/v1/chat/completions", {"model": "kill-fast", "stream": False}),
]


def complete(path: str, stream: bool, r: httpx.Response) -> bool:
    """Whether the whole reply arrived (the read itself raised otherwise)."""
    if r.status_code != 200:
        return False
    text = r.text.strip()
    if path == "/api/chat":
        return bool(json.loads(text.splitlines()[-1]).get("done"))
    return text.endswith("data: [DONE]") if stream else bool(json.loads(text).get("choices"))


def load(url: str, worker: int, stop: threading.Event, done: list[str]) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        i = 0
        while not stop.is_set():
            path, extra = REQUESTS[(worker + i) % len(REQUESTS)]
            rid = f"kill-{worker}-{i}"
            i += 1
            body = {"messages": [{"role": "user", "content": f"hi {rid}"}], **extra}
            try:
                r = client.post(path, json=body, headers={"X-Request-Id": rid})
                if complete(path, bool(extra["stream"]), r):
                    done.append(rid)
            except (httpx.HTTPError, ValueError):
                continue  # the server went away mid-reply: no complete response


def test_sigkill_mid_load_loses_no_record_of_a_response(scripted: Scripted, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {"LLMUX_CONFIG": str(config(home, scripted.url))}
    server = start_server(home, extra_env=env)
    stop = threading.Event()
    done: list[str] = []
    workers = [threading.Thread(target=load, args=(server.url, w, stop, done))
               for w in range(THREADS)]  # fmt: skip
    for w in workers:
        w.start()
    deadline = time.monotonic() + 30
    while len(done) < 300 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.stop(signal.SIGKILL)  # mid-load: requests in every state
    stop.set()
    for w in workers:
        w.join(timeout=20)
    answered = set(done)
    assert len(answered) >= 300, f"only {len(answered)} complete responses before the kill"
    port = int(server.url.rsplit(":", 1)[1])
    again = start_server(home, extra_env=env, port=port)
    try:
        with again.client() as client:
            export = client.get("/admin/audit/export", params={"kind": "model"})
            assert export.status_code == 200, export.text
            recorded = {json.loads(x)["request_id"] for x in export.content.splitlines()}
            report = client.get("/admin/audit/verify").json()
    finally:
        again.stop()
    lost = answered - recorded
    assert not lost, f"{len(lost)} of {len(answered)} answered requests have no record"
    assert report["ok"], report
    assert sum(r["rows"] for r in report["replicas"]) >= len(answered)
