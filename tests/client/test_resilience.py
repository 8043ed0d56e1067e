"""Retries, Retry-After, the circuit breaker and stream failures, against a scripted
fault server on loopback (the real server cannot be made to fail on cue)."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from llmux.client import (
    AsyncClient,
    CircuitBreaker,
    CircuitOpenError,
    Client,
    RequestError,
    ResponseError,
    RetryPolicy,
    UnreachableError,
)
from llmux.client.resilience import retry_after
from tests.client.faults import FaultServer, Reply, ok
from tests.conftest import free_port

VERSION = ok({"version": "9.9.9"})
FAST = RetryPolicy(max_attempts=4, backoff=0.05, max_backoff=0.2, total_timeout=10)


def busy(status: int = 503, after: str | None = None) -> Reply:
    headers = {"Retry-After": after} if after is not None else {}
    return Reply(status, headers, {"error": "server busy, please try again"})


def gaps(server: FaultServer) -> list[float]:
    times = [t for _, _, t in server.seen]
    return [b - a for a, b in itertools.pairwise(times)]


def test_429_with_retry_after_is_retried_after_that_many_seconds() -> None:
    with FaultServer([busy(429, "1"), VERSION]) as f:
        assert Client(f.url, retry=FAST).version() == "9.9.9"
    assert len(f.seen) == 2
    assert gaps(f)[0] >= 0.95, "Retry-After: 1 honoured over the 0.05s backoff"


def test_retry_after_as_an_http_date() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
    with FaultServer([busy(503, when), VERSION]) as f:
        assert Client(f.url, retry=FAST).version() == "9.9.9"
    assert 0.5 <= gaps(f)[0] <= 2.5  # the date has one-second resolution


def test_retry_after_parsing() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after({"retry-after": "3"}) == 3.0
    assert retry_after({"retry-after": "Thu, 01 Jan 2026 12:00:07 GMT"}, lambda: now) == 7.0
    assert retry_after({"retry-after": "Thu, 01 Jan 2026 11:00:00 GMT"}, lambda: now) == 0.0
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({}) is None


def test_backoff_grows_with_jitter_and_stops_at_max_attempts() -> None:
    with FaultServer([busy(502)]) as f:
        policy = RetryPolicy(max_attempts=4, backoff=0.1, max_backoff=1, total_timeout=10)
        with pytest.raises(ResponseError) as exc:
            Client(f.url, retry=policy, breaker=False).version()
    assert exc.value.status_code == 502 and "server busy" in str(exc.value)
    assert len(f.seen) == 4
    waits = gaps(f)
    # retry n waits between half and all of 0.1 * 2**(n-1)
    for n, wait in enumerate(waits, start=1):
        assert 0.05 * 2 ** (n - 1) - 0.01 <= wait <= 0.1 * 2 ** (n - 1) + 0.15, waits


def test_no_retry_starts_past_the_total_time() -> None:
    with FaultServer([busy(429, "30"), VERSION]) as f:
        started = time.monotonic()
        with pytest.raises(ResponseError) as exc:
            Client(f.url, retry=RetryPolicy(total_timeout=5)).version()
    assert exc.value.status_code == 429 and len(f.seen) == 1
    assert time.monotonic() - started < 2, "gave up at once instead of waiting 30s"


def test_client_errors_are_not_retried_and_carry_the_openai_message() -> None:
    body = {"error": {"message": "bad key", "type": "authentication_error"}}
    with FaultServer([Reply(401, body=body), VERSION]) as f, pytest.raises(ResponseError) as exc:
        Client(f.url, retry=FAST).version()
    assert (exc.value.status_code, exc.value.error) == (401, "bad key")
    assert len(f.seen) == 1


def test_breaker_opens_fails_fast_then_lets_a_trial_through() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown=0.5)
    with FaultServer([busy(), busy(), busy(), VERSION]) as f:
        client = Client(f.url, retry=RetryPolicy(max_attempts=1), breaker=breaker)
        for _ in range(3):
            with pytest.raises(ResponseError):
                client.version()
        assert breaker.state == "open"
        started = time.monotonic()
        with pytest.raises(CircuitOpenError) as exc:
            client.version()
        assert time.monotonic() - started < 0.1 and len(f.seen) == 3, "failed fast, unsent"
        assert "circuit open" in str(exc.value) and "llmux serve" in str(exc.value)
        assert 0 < exc.value.retry_in <= 0.5
        time.sleep(0.55)
        assert breaker.state == "half-open"
        assert client.version() == "9.9.9", "the trial call goes through"
        assert breaker.state == "closed" and len(f.seen) == 4


def test_a_failed_trial_opens_the_circuit_again() -> None:
    clock = [0.0]
    breaker = CircuitBreaker(threshold=2, cooldown=10, clock=lambda: clock[0])
    breaker.failure()
    breaker.failure()
    with pytest.raises(CircuitOpenError):
        breaker.admit("http://x")
    clock[0] = 10.0
    breaker.admit("http://x")  # the trial
    with pytest.raises(CircuitOpenError):
        breaker.admit("http://x")  # only one trial at a time
    breaker.failure()
    assert breaker.state == "open"
    clock[0] = 15.0
    with pytest.raises(CircuitOpenError):
        breaker.admit("http://x")


def test_retries_count_towards_the_breaker() -> None:
    breaker = CircuitBreaker(threshold=2, cooldown=60)
    with FaultServer([busy()]) as f, pytest.raises(CircuitOpenError):
        Client(f.url, retry=FAST, breaker=breaker).version()
    assert len(f.seen) == 2, "the breaker stopped the retries after two failures"


def test_unreachable_server_is_retried_then_names_the_fix() -> None:
    url = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(UnreachableError) as exc:
        Client(url, retry=RetryPolicy(max_attempts=3, backoff=0.2)).list()
    assert time.monotonic() - started >= 0.2 * 0.5 + 0.4 * 0.5, "two backoffs were waited"
    assert str(exc.value) == (f"could not reach llmux at http://{url}; start it with `llmux serve`")
    assert isinstance(exc.value, ConnectionError)


def test_mid_stream_error_line_raises_after_the_chunks_before_it() -> None:
    lines = [
        {"model": "m", "message": {"role": "assistant", "content": "Hel"}, "done": False},
        {"error": "the model failed: out of memory"},
    ]
    with FaultServer([Reply(body=lines)]) as f:
        stream = Client(f.url).chat("m", [{"role": "user", "content": "hi"}], stream=True)
        assert next(stream).message.content == "Hel"
        with pytest.raises(ResponseError) as exc:
            next(stream)
    assert exc.value.status_code == -1 and "out of memory" in exc.value.error


def test_a_started_stream_is_never_sent_again() -> None:
    chunk = {"model": "m", "response": "a", "done": False}
    with FaultServer([Reply(body=[chunk, chunk], drop=True), Reply(body=[chunk])]) as f:
        stream = Client(f.url, retry=FAST).generate("m", "x", stream=True)
        got = []
        with pytest.raises(RequestError):
            got.extend(c.response for c in stream)
    assert got == ["a", "a"] and len(f.seen) == 1


def test_an_error_status_on_a_stream_raises_before_iterating() -> None:
    fault = FaultServer([Reply(404, body={"error": "model 'x' not found"})])
    with fault as f, pytest.raises(ResponseError) as exc:
        Client(f.url).chat("x", [{"role": "user", "content": "hi"}], stream=True)
    assert exc.value.status_code == 404


@pytest.mark.anyio
async def test_async_client_retries_and_streams_the_same_way() -> None:
    lines = [{"model": "m", "response": f"{i}", "done": i == 2} for i in range(3)]
    with FaultServer([busy(429, "1"), Reply(body=lines)]) as f:
        async with AsyncClient(f.url, retry=FAST) as client:
            stream = await client.generate("m", "x", stream=True)
            assert [c.response async for c in stream] == ["0", "1", "2"]
    assert len(f.seen) == 2 and gaps(f)[0] >= 0.95


@pytest.mark.anyio
async def test_async_breaker_opens() -> None:
    breaker = CircuitBreaker(threshold=2, cooldown=60)
    with FaultServer([busy()]) as f:
        async with AsyncClient(f.url, retry=False, breaker=breaker) as client:
            for _ in range(2):
                with pytest.raises(ResponseError):
                    await client.version()
            with pytest.raises(CircuitOpenError):
                await client.version()
    assert len(f.seen) == 2
