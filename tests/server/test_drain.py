"""Graceful drain (issue 19 item 4). In-process: once the drain begins, new requests get
503 with ``Retry-After`` in each API's shape, new WebSocket turns too, and a stream cut
at the end of the grace period ends with its API's error event or line. Real ``llmux
serve`` processes: under 20 concurrent streams SIGTERM lets every one of them finish
while new requests, on an open keep-alive connection as on a new one, get 503; then
the process exits 0 and says it drained. A second signal cuts a running stream at once,
with the error event, and the process still exits 0."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.websockets import WebSocketDisconnect

from llmux.core.context import RequestContext
from llmux.policies import Handler, Operation, PassThrough
from llmux.server.drain import Drain
from tests.conftest import MODEL, Server, start_server
from tests.support.fakes import FakeBackend, FakeReply
from tests.support.inprocess import App, in_process
from tests.support.scrape import scrape, value

WS = "ws://127.0.0.1:11434"
LONG = 600  # seconds a client waits: the machine may be busy (no timed assertions)
FAKE = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}


class Flowing(PassThrough):
    """Sets ``started`` once two items of a reply passed: the response has started."""

    def __init__(self) -> None:
        self.started = asyncio.Event()

    def __call__(self, ctx: RequestContext, op: Operation, next: Handler) -> AsyncIterator[Any]:
        return self.flow(next(ctx, op))

    async def flow(self, items: AsyncIterator[Any]) -> AsyncIterator[Any]:
        count = 0
        async for item in items:
            yield item
            count += 1
            if count == 2:
                self.started.set()


@pytest.fixture
def flowing() -> Flowing:
    return Flowing()


@pytest.fixture
def app(tmp_path: Path, flowing: Flowing) -> Iterator[App]:
    backend = FakeBackend()
    with in_process(tmp_path, backend=backend, policies=[flowing]) as app:
        yield app


def drain_of(app: App) -> Drain:
    drain: Drain = app.client.app.state.drain  # type: ignore[attr-defined]
    return drain


def test_new_requests_get_503_in_each_apis_shape(app: App) -> None:
    drain_of(app).begin()
    r = app.client.post("/v1/chat/completions", json=FAKE)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.headers["connection"] == "close"
    error = r.json()["error"]
    assert error["code"] == "server_busy" and "shutting down" in error["message"]
    r = app.client.post("/api/chat", json=FAKE)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert isinstance(r.json()["error"], str) and "shutting down" in r.json()["error"]
    assert app.client.get("/api/tags").status_code == 503  # all new work, not only models
    assert app.client.get("/healthz").status_code == 200
    assert app.client.get("/readyz").status_code == 503
    assert app.backend.calls_of("chat") == []
    assert drain_of(app).refused == 3


def test_websockets_during_the_drain(app: App) -> None:
    with app.client.websocket_connect(WS + "/v1/chat/completions/ws") as ws:
        drain_of(app).begin()  # an open connection: its new turns are refused
        ws.send_json({"turn": "t1", "request": FAKE})
        answer = ws.receive_json()
        assert answer["turn"] == "t1" and answer["status"] == 503
        assert answer["error"]["code"] == "server_busy"
    with pytest.raises(WebSocketDisconnect) as closed, app.client.websocket_connect(WS + "/api/chat/ws") as ws:  # fmt: skip
        ws.receive_text()
    assert closed.value.code == 1013  # try again later


def cut_when_started(app: App, flowing: Flowing) -> None:
    """Begin the drain with no grace period once the reply has started: it is cut."""
    drain = drain_of(app)

    async def cutter() -> None:
        await flowing.started.wait()
        drain.grace_s = 0.0
        drain.begin()
        assert not drain.tick()  # announces, then cuts what runs

    app.client.portal.start_task_soon(cutter)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("path", "sse"), [("/v1/chat/completions", True), ("/api/chat", False)])
def test_a_stream_cut_at_the_grace_period_ends_with_the_error(
    app: App, flowing: Flowing, path: str, sse: bool
) -> None:
    app.backend.replies.append(FakeReply(pieces=("word ",) * 400, delay_s=0.05))  # 20 s
    cut_when_started(app, flowing)
    r = app.client.post(path, json={**FAKE, "stream": True})
    assert r.status_code == 200
    lines = [line for line in r.text.splitlines() if line]
    assert len(lines) >= 2
    last = json.loads(lines[-1].removeprefix("data: ") if sse else lines[-1])
    error = last["error"]
    message = error["message"] if sse else error
    assert "grace period" in message and "shutting down" in message
    assert "[DONE]" not in r.text
    drain = drain_of(app)
    assert len(drain.cut) == 1 and not drain.active and drain.tick()  # then: drained


def test_a_reply_not_started_when_cut_is_a_503(app: App, flowing: Flowing) -> None:
    app.backend.replies.append(FakeReply(pieces=("word ",) * 400, delay_s=0.05))
    cut_when_started(app, flowing)
    r = app.client.post("/v1/chat/completions", json={**FAKE, "stream": False})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "server_busy"


# ---- real processes ----------------------------------------------------------------------


def stream_body(max_tokens: int, bias: dict[str, int], stream: bool = True) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Count to a hundred."}],
        "max_tokens": max_tokens,
        "logit_bias": bias,
        "stream": stream,
    }


def one_stream(url: str, body: dict[str, Any], started: list[bool]) -> list[str]:
    """A streaming chat completion read to its end: its non-empty lines."""
    with (
        httpx.Client(base_url=url, timeout=LONG) as http,
        http.stream("POST", "/v1/chat/completions", json=body) as r,
    ):
        assert r.status_code == 200, r.read()
        started.append(True)
        return [line for line in r.iter_lines() if line]


def held(url: str, body: dict[str, Any], release: threading.Event) -> httpx.Response:
    """A request whose body arrives in two parts, the second once ``release`` is set:
    it is in flight, by the client's choice, until then."""
    data = json.dumps(body).encode()

    def parts() -> Iterator[bytes]:
        yield data[:10]
        release.wait(LONG)
        yield data[10:]

    with httpx.Client(base_url=url, timeout=LONG) as http:
        headers = {"Content-Type": "application/json"}
        return http.post("/v1/chat/completions", content=parts(), headers=headers)


def port_hook(ports: list[int]) -> Any:
    """An httpx response hook: the client side's port of each response's connection,
    read before the body (a ``Connection: close`` reply closes it after)."""

    def hook(r: httpx.Response) -> None:
        ports.append(r.extensions["network_stream"].get_extra_info("client_addr")[1])

    return hook


def wait_for_log(server: Server, text: str) -> None:
    deadline = time.monotonic() + 60
    while text not in server.log.read_text():
        assert time.monotonic() < deadline, f"{text!r} not in the log"
        time.sleep(0.05)


def until_accepted(http: httpx.Client, started: list[bool], count: int) -> None:
    """Until the server runs ``count`` model operations (queued or generating), or that
    many streams have started (a fast machine may have finished some already)."""
    deadline = time.monotonic() + LONG
    while value(scrape(http), "llmux_requests_in_flight") < count and len(started) < count:
        assert time.monotonic() < deadline, "the streams were not accepted"
        time.sleep(0.05)


def assert_refused(r: httpx.Response, ollama: bool = False) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "1"
    error = r.json()["error"]
    assert "shutting down" in (error if ollama else error["message"])


def assert_ended_normally(lines: list[str]) -> None:
    assert lines[-1] == "data: [DONE]", lines[-3:]
    ends = [json.loads(x.removeprefix("data: "))["choices"][0]["finish_reason"] for x in lines[:-1]]
    assert ends[-1] in ("length", "stop") and "error" not in lines[-2]


def refused_while_draining(srv: Server, keepalive: httpx.Client, bias: dict[str, int]) -> None:
    """SIGTERM, then new requests: on the open keep-alive connection, then on new ones."""
    ports: list[int] = []
    keepalive.event_hooks["response"] = [port_hook(ports)]
    keepalive.get("/api/version")  # the connection is open and idle now
    srv.proc.send_signal(signal.SIGTERM)
    wait_for_log(srv, "draining:")
    r = keepalive.post("/v1/chat/completions", json=stream_body(4, bias))
    assert ports[0] == ports[1]  # on the open keep-alive connection
    assert_refused(r)
    assert r.headers["connection"] == "close"  # the next try may go elsewhere
    assert_refused(keepalive.post("/api/chat", json=stream_body(4, bias)), ollama=True)
    ready = keepalive.get("/readyz")
    assert ready.status_code == 503 and ready.json()["status"] == "draining"
    assert keepalive.get("/healthz").status_code == 200


def test_sigterm_under_20_streams_lets_all_finish_and_refuses_new_work(
    tmp_path: Path, no_eos: dict[str, int]
) -> None:
    env = {"LLMUX_SERVER__DRAIN_S": "900"}  # longer than any of it takes: nothing is cut
    srv = start_server(tmp_path / "home", extra_env=env)
    release = threading.Event()
    started: list[bool] = []
    with ThreadPoolExecutor(24) as pool, httpx.Client(base_url=srv.url, timeout=LONG) as keepalive:
        try:
            keepalive.post("/v1/chat/completions", json=stream_body(1, no_eos, stream=False))
            holder = pool.submit(held, srv.url, stream_body(2, no_eos, stream=False), release)
            streams = [
                pool.submit(one_stream, srv.url, stream_body(8, no_eos), started) for _ in range(20)
            ]
            until_accepted(keepalive, started, 20)
            refused_while_draining(srv, keepalive, no_eos)
            for future in streams:
                assert_ended_normally(future.result(timeout=LONG))
            assert srv.proc.poll() is None  # the held request still runs
        finally:
            release.set()
        answer = holder.result(timeout=LONG)
    assert answer.status_code == 200, answer.text  # accepted before the signal: served
    assert answer.json()["choices"][0]["finish_reason"] in ("length", "stop")
    assert srv.proc.wait(timeout=60) == 0
    log = srv.log.read_text()
    drained = re.search(r"drained: (\d+) request\(s\) finished, 0 cut, 2 refused", log)
    assert drained is not None and int(drained[1]) >= 1, log[-3000:]
    assert "Traceback" not in log


def test_a_second_signal_cuts_a_stream_with_its_error_event(
    tmp_path: Path, no_eos: dict[str, int]
) -> None:
    srv = start_server(tmp_path / "home")  # drain_s 10 s: the second signal comes first
    with (
        httpx.Client(base_url=srv.url, timeout=LONG) as http,
        http.stream("POST", "/v1/chat/completions", json=stream_body(3000, no_eos)) as r,
    ):
        lines = r.iter_lines()
        assert next(lines).startswith("data: {")
        srv.proc.send_signal(signal.SIGTERM)
        wait_for_log(srv, "draining:")
        srv.proc.send_signal(signal.SIGINT)  # the second: SIGTERM or SIGINT alike
        rest = [line for line in lines if line]
    last = json.loads(rest[-1].removeprefix("data: "))
    assert last["error"]["code"] == "server_busy" and "grace period" in last["error"]["message"]
    assert "data: [DONE]" not in rest
    assert srv.proc.wait(timeout=60) == 0
    log = srv.log.read_text()
    assert "a second signal ended it; cutting 1 request(s)" in log
    assert "drained: 0 request(s) finished, 1 cut" in log
