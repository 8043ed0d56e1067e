"""The upstreams through /metrics, on the gateway of test_faults (a scripted upstream
that injects faults, a dead member, a real llmux): retries, failed attempts by kind,
failovers, latency and breaker states."""

from __future__ import annotations

import time

import httpx
import ollama
import openai
import pytest

from tests.conftest import Server
from tests.support.scrape import Samples, scrape, value
from tests.upstream.scripted import Scripted

MSG = [{"role": "user", "content": "hi"}]


def metrics(gateway: Server) -> Samples:
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        return scrape(http)


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_retries_failures_and_failovers_are_counted(gateway: Server, scripted: Scripted) -> None:
    before = metrics(gateway)
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0, timeout=30)
    client.chat.completions.create(model="flaky-oa", messages=MSG)  # type: ignore[arg-type]
    client.chat.completions.create(model="flaky-oa", messages=MSG)  # type: ignore[arg-type]
    ollama.Client(host=gateway.url).chat(model="pool", messages=MSG)
    after = metrics(gateway)
    # flaky-*: a 429 every other call, retried after its Retry-After
    assert grew(before, after, "llmux_upstream_retries_total", upstream="s-openai") >= 1
    assert grew(before, after, "llmux_upstream_errors_total", upstream="s-openai", kind="status_4xx") >= 1  # fmt: skip
    assert grew(before, after, "llmux_upstream_request_duration_seconds_count", upstream="s-openai") == 2  # fmt: skip
    # pool: s-reset (weight 5) resets the connection, unless its breaker is open by now;
    # either way the answer came from s-pool
    reset = grew(before, after, "llmux_upstream_failovers_total", upstream="s-reset")
    assert reset >= 1 or value(after, "llmux_upstream_breaker_state", upstream="s-reset") == 2
    assert grew(before, after, "llmux_upstream_request_duration_seconds_count", upstream="s-pool") == 1  # fmt: skip
    assert value(after, "llmux_requests_total", backend="pool", model="flaky-oa", status="200") >= 2  # fmt: skip


def test_breaker_state_is_exported(gateway: Server, scripted: Scripted) -> None:
    client = openai.OpenAI(base_url=gateway.url, api_key="x", max_retries=0, timeout=30)
    assert value(metrics(gateway), "llmux_upstream_breaker_state", upstream="s-brk") == 0
    scripted.fail_brk = True
    try:
        for _ in range(2):
            with pytest.raises(openai.InternalServerError):
                client.chat.completions.create(model="brk", messages=MSG)  # type: ignore[arg-type]
        s = metrics(gateway)
        assert value(s, "llmux_upstream_breaker_state", upstream="s-brk") == 2  # open
        assert value(s, "llmux_upstream_errors_total", upstream="s-brk", kind="status_5xx") >= 2
    finally:
        scripted.fail_brk = False
    time.sleep(1.1)  # open_s = 1
    assert value(metrics(gateway), "llmux_upstream_breaker_state", upstream="s-brk") == 1
    for _ in range(2):  # the half-open trials succeed: closed again for the other tests
        client.chat.completions.create(model="brk", messages=MSG)  # type: ignore[arg-type]
    assert value(metrics(gateway), "llmux_upstream_breaker_state", upstream="s-brk") == 0
