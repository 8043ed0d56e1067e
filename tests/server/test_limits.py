"""Admission: past ``num_parallel + max_queue`` requests in flight, answer 503."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import MODEL, Server, running_server
from tests.support.models import add_params

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


def long_and_two_short(url: str, path: str, num_predict: int = 300) -> list[httpx.Response]:
    """One long stream on MODEL, then two short requests for it while it runs."""
    running = threading.Event()

    def long_stream() -> None:
        body = {
            "model": MODEL,
            "prompt": "Tell a long story.",
            "options": {"num_predict": num_predict, "temperature": 1},
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
    others = [threading.Thread(target=short) for _ in range(2)]
    for t in others:
        t.start()
    for t in [*others, runner]:
        t.join(timeout=120)
    return replies


@pytest.mark.parametrize("path", list(SHORT))
def test_full_queue_is_503_with_retry_after(small_queue: Server, path: str) -> None:
    url = small_queue.url
    httpx.post(url + "/api/generate", json={"model": MODEL}, timeout=60)  # load first
    # capacity is num_parallel + max_queue = 2: one is running, so of two more requests
    # one is queued and one is refused, whichever arrives first
    replies = long_and_two_short(url, path)
    assert sorted(r.status_code for r in replies) == [200, 503]
    busy = next(r for r in replies if r.status_code == 503)
    assert int(busy.headers["retry-after"]) >= 1
    assert "server busy" in busy_message(path, busy.json())
    after = httpx.post(url + path, json=SHORT[path], timeout=60)
    assert after.status_code == 200, "capacity is given back when requests finish"


def test_other_loaded_models_slots_do_not_widen_one_models_queue(small_queue: Server) -> None:
    url = small_queue.url
    for name in ("idle-a:latest", "idle-b:latest"):
        add_params(small_queue.home, name, MODEL, {"temperature": 0.5})
    for name in (MODEL, "idle-a:latest", "idle-b:latest"):  # three loaded, two of them idle
        r = httpx.post(url + "/api/generate", json={"model": name, "keep_alive": "10m"}, timeout=60)
        assert r.status_code == 200
    loaded = {m["name"] for m in httpx.get(url + "/api/ps", timeout=10).json()["models"]}
    assert len(loaded) == 3, loaded
    replies = long_and_two_short(url, "/api/generate", num_predict=60)
    assert sorted(r.status_code for r in replies) == [200, 503], "more than max_queue waited"
