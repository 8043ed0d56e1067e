"""Admission: past ``num_parallel + max_queue`` requests in flight, answer 503."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import MODEL, Server, running_server

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def small_queue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"LLMUX_ENGINE__MAX_QUEUE": "1", "LLMUX_ENGINE__NUM_PARALLEL": "1"}
    yield from running_server(tmp_path_factory, "queue", env)


SHORT = {
    "/api/generate": {
        "model": MODEL,
        "prompt": "hi",
        "stream": False,
        "options": {"num_predict": 2},
    },
    "/v1/chat/completions": {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2,
    },
    "/chat/completions": {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2,
    },
}


def busy_message(path: str, body: dict) -> str:  # type: ignore[type-arg]
    if path.startswith("/api/"):
        return str(body["error"])
    assert body["error"]["type"] == "server_error" and body["error"]["code"] == "server_busy"
    return str(body["error"]["message"])


@pytest.mark.parametrize("path", list(SHORT))
def test_full_queue_is_503_with_retry_after(small_queue: Server, path: str) -> None:
    url = small_queue.url
    httpx.post(url + "/api/generate", json={"model": MODEL}, timeout=60)  # load first
    running = threading.Event()

    def long_stream() -> None:
        body = {
            "model": MODEL,
            "prompt": "Tell a long story.",
            "options": {"num_predict": 300, "temperature": 1},
        }
        with httpx.stream("POST", url + "/api/generate", json=body, timeout=120) as r:
            running.set()  # headers arrive with the first token: it is running
            for _ in r.iter_lines():
                pass

    replies: list[httpx.Response] = []

    def short() -> None:
        replies.append(httpx.post(url + path, json=SHORT[path], timeout=120))

    runner = threading.Thread(target=long_stream)
    runner.start()
    assert running.wait(timeout=60)
    # capacity is num_parallel + max_queue = 2: one is running, so of two more requests
    # one is queued and one is refused, whichever arrives first
    others = [threading.Thread(target=short) for _ in range(2)]
    for t in others:
        t.start()
    for t in [*others, runner]:
        t.join(timeout=120)
    assert sorted(r.status_code for r in replies) == [200, 503]
    busy = next(r for r in replies if r.status_code == 503)
    assert int(busy.headers["retry-after"]) >= 1
    assert "server busy" in busy_message(path, busy.json())
    after = httpx.post(url + path, json=SHORT[path], timeout=60)
    assert after.status_code == 200, "capacity is given back when requests finish"
