"""The engine's scheduler, seen through /metrics on a real server with the bundled
model and 4 slots: batch utilisation and queue depth under 1, 4 and 8 concurrent
streams; and 10,000 requests for models nobody serves leave the series as they were."""

from __future__ import annotations

import random
import string
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.conftest import Server, running_server
from tests.support.scrape import Samples, parse, scrape, value

SLOTS = 4
MODEL = "smollm2:135m"


@pytest.fixture(scope="module")
def engine_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"LLMUX_ENGINE__NUM_PARALLEL": str(SLOTS), "LLMUX_ENGINE__KEEP_ALIVE": "30m"}
    yield from running_server(tmp_path_factory, "engine-metrics", env)


def stream(url: str, no_eos: dict[str, int], tokens: int) -> None:
    body = {
        "model": MODEL, "stream": True, "max_tokens": tokens, "logit_bias": no_eos,
        "messages": [{"role": "user", "content": "Count slowly."}],
    }  # fmt: skip
    with (
        httpx.Client(base_url=url, timeout=120) as http,
        http.stream("POST", "/v1/chat/completions", json=body) as r,
    ):
        assert r.status_code == 200
        for _ in r.iter_lines():
            pass


def under_load(server: Server, streams: int, no_eos: dict[str, int]) -> dict[str, Any]:
    """Run ``streams`` at once; sample the gauges while they run."""
    seen: dict[str, float] = {"running": 0, "queue": 0, "utilization": 0}
    done = threading.Event()

    def sample() -> None:
        with server.client() as http:
            while not done.is_set():
                s = scrape(http)
                for key, name in (
                    ("running", "llmux_engine_running_sequences"),
                    ("queue", "llmux_engine_queue_depth"),
                    ("utilization", "llmux_engine_batch_utilization"),
                ):
                    seen[key] = max(seen[key], value(s, name, model=MODEL))
                time.sleep(0.02)

    with server.client() as http:
        before = scrape(http)
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with ThreadPoolExecutor(streams) as pool:
            for f in [pool.submit(stream, server.url, no_eos, 48) for _ in range(streams)]:
                f.result()
    finally:
        done.set()
        sampler.join()
    with server.client() as http:
        after = scrape(http)
    return {**seen, "ratio": ratio(before, after), "wide": wide_calls(before, after)}


def delta(before: Samples, after: Samples, name: str, **labels: Any) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def ratio(before: Samples, after: Samples) -> float:
    """Busy slots over slots across the steps of this load (from the counters)."""
    busy = delta(before, after, "llmux_engine_busy_slot_steps_total", model=MODEL)
    slots = delta(before, after, "llmux_engine_slot_steps_total", model=MODEL)
    return busy / slots


def wide_calls(before: Samples, after: Samples) -> float:
    """Decode calls that carried three or four sequences."""
    name = "llmux_engine_batch_sequences_bucket"
    return delta(before, after, name, model=MODEL, le="4.0") - delta(
        before, after, name, model=MODEL, le="2.0"
    )


def test_utilisation_and_queue_follow_concurrency(
    engine_server: Server, no_eos: dict[str, int]
) -> None:
    stream(engine_server.url, no_eos, 4)  # load the model first
    one = under_load(engine_server, 1, no_eos)
    four = under_load(engine_server, 4, no_eos)
    eight = under_load(engine_server, 8, no_eos)
    # one stream keeps one slot of four busy, whatever the timing
    assert one["ratio"] == pytest.approx(1 / SLOTS, abs=0.01)
    assert one["running"] == 1 and one["queue"] == 0 and one["wide"] == 0
    assert one["utilization"] <= 1 / SLOTS + 0.01
    # four fill the slots (they start a little apart, so not every step is full)
    assert four["running"] == SLOTS and four["ratio"] > 0.7 and four["wide"] > 0
    assert four["utilization"] > 0.7
    # eight: the slots stay full and the other four wait in the queue
    assert eight["running"] == SLOTS and eight["ratio"] > 0.85
    assert eight["queue"] >= SLOTS - 1
    assert eight["utilization"] > 0.85
    assert four["queue"] < eight["queue"]
    with engine_server.client() as http:
        s = scrape(http)
    assert value(s, "llmux_engine_slots", model=MODEL) == SLOTS
    assert value(s, "llmux_engine_loads_total", model=MODEL) == 1
    assert value(s, "llmux_engine_generated_tokens_total", model=MODEL) >= 13 * 48
    assert (
        0
        < value(s, "llmux_engine_kv_cells_used", model=MODEL)
        <= value(s, "llmux_engine_kv_cells", model=MODEL)
    )


def test_unknown_model_names_leave_the_series_bounded(engine_server: Server) -> None:
    def name() -> str:
        return "".join(random.choices(string.ascii_lowercase + string.digits, k=12))

    def ask(http: httpx.Client, i: int) -> None:
        if i % 2:
            r = http.post("/api/chat", json={"model": name(), "messages": [{"role": "user", "content": "x"}], "stream": False})  # fmt: skip
        else:
            r = http.post("/v1/chat/completions", json={"model": name(), "messages": [{"role": "user", "content": "x"}]})  # fmt: skip
        assert r.status_code == 404

    with engine_server.client() as http:
        for i in range(20):  # every series these requests touch exists now
            ask(http, i)
        http.get("/metrics")  # the scrape's own series, too
        first = http.get("/metrics").text
    start = parse(first)

    def worker(k: int) -> None:
        with engine_server.client() as http:
            for i in range(k, 10_000, 8):
                ask(http, i)

    with ThreadPoolExecutor(8) as pool:
        for f in [pool.submit(worker, k) for k in range(8)]:
            f.result()
    with engine_server.client() as http:
        end = scrape(http)
    assert len(end) == len(start), sorted(set(end) - set(start))[:10]
    assert delta(start, end, "llmux_requests_total", model="other", status="404") == 10_000
    assert not any(
        dict(labels).get(key) not in (None, "other", MODEL)
        for _, labels in end
        for key in ("model", "gen_ai_request_model")
    )
