"""The response cache policy at the gateway, around a fake backend that counts calls:
hits and misses, what is never stored, Cache-Control, single flight, Redis (real, and
failing), settings per key and per model."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from llmux.config import Settings
from llmux.core.chunks import ChatChunk
from llmux.core.context import Principal, RequestContext
from llmux.core.request import ChatRequest, Message, Sampling
from llmux.errors import BackendError, LlmuxError
from llmux.gateway import Gateway
from llmux.policies import Operation, Outcome, PassThrough
from llmux.policies.cache import Cache, Control
from llmux.policies.cachestore import MemoryCache, RedisCache, decode, make_entry
from llmux.policies.meter import CACHE_HEADER
from llmux.policies.settings import CacheSettings
from llmux.services import build_cache
from tests.support.fakes import FakeBackend

pytestmark = pytest.mark.anyio
MODEL = "fake:latest"
GREEDY = Sampling(temperature=0)
HI = (Message("user", "Why is the sky blue?"),)


class Outcomes(PassThrough):
    """Outermost: the outcome each operation ended with."""

    def __init__(self) -> None:
        self.seen: list[Outcome] = []

    def finished(self, ctx: RequestContext, op: Operation, outcome: Outcome) -> None:
        self.seen.append(outcome)


def make(
    backend: FakeBackend | None = None, l2: RedisCache | None = None, **settings: Any
) -> tuple[Gateway, FakeBackend, Cache, Outcomes]:
    backend = backend or FakeBackend()
    config = CacheSettings(enabled=True, **settings)
    memory = MemoryCache(config.memory_bytes) if config.memory_bytes else None
    cache = Cache(config, memory, l2)
    outcomes = Outcomes()
    gateway = Gateway(backend, policies=[outcomes, cache])
    cache.bind(gateway.served_by)
    return gateway, backend, cache, outcomes


def ctx(principal: Principal | None = None, cache_control: str = "") -> RequestContext:
    return RequestContext(
        "ollama", "/api/chat", principal=principal or Principal(), cache_control=cache_control
    )


def request(sampling: Sampling = GREEDY, **fields: Any) -> ChatRequest:
    return ChatRequest(MODEL, fields.pop("messages", HI), sampling=sampling, **fields)


async def ask(
    gw: Gateway,
    c: RequestContext | None = None,
    req: ChatRequest | None = None,
    stream: bool = True,
) -> tuple[list[ChatChunk], str]:
    c = c or ctx()
    chunks = [chunk async for chunk in gw.chat(c, req or request(), stream=stream)]
    return chunks, c.headers.get(CACHE_HEADER, "")


def text(chunks: list[ChatChunk]) -> str:
    return "".join(c.content for c in chunks)


async def test_a_repeated_request_is_a_hit_with_cached_usage() -> None:
    gw, backend, _, outcomes = make()
    first, state = await ask(gw, stream=False)
    assert state == "miss"
    again, state = await ask(gw)
    assert state == "hit-l1"
    assert text(again) == text(first) == "Hello world"
    assert len(backend.calls_of("chat")) == 1
    final = again[-1]
    assert final.done and final.metrics is not None and first[-1].metrics is not None
    assert final.metrics.prompt_tokens == first[-1].metrics.prompt_tokens > 0
    assert final.metrics.cached_tokens == final.metrics.prompt_tokens
    assert final.metrics.completion_tokens == first[-1].metrics.completion_tokens
    assert final.metrics.load_ns == 0 and 0 < final.metrics.total_ns < 50_000_000
    assert [o.cache for o in outcomes.seen] == [None, "l1"]
    assert outcomes.seen[1].usage.cached_tokens == outcomes.seen[1].usage.prompt_tokens


async def test_pieces_are_coalesced_and_replayed_as_a_stream() -> None:
    gw, backend, _, _ = make()
    backend.reply(*[f"w{i} " for i in range(200)])
    first, _ = await ask(gw)
    again, state = await ask(gw)
    assert state == "hit-l1" and text(again) == text(first)
    assert 2 < len(again) < len(first)  # fewer, larger pieces, still a stream
    assert all(len(c.content) < 300 for c in again)


async def test_only_reproducible_requests_by_default() -> None:
    gw, backend, _, _ = make()
    warm = request(Sampling(temperature=0.8))
    seeded = request(Sampling(temperature=0.8, seed=42))
    for _ in range(2):
        _, state = await ask(gw, req=warm)
        assert state == "bypass"
    assert len(backend.calls_of("chat")) == 2
    states = [(await ask(gw, req=seeded))[1] for _ in range(2)]
    assert states == ["miss", "hit-l1"]
    # an explicit opt-in: Cache-Control max-age
    states = [(await ask(gw, ctx(cache_control="max-age=600"), warm))[1] for _ in range(2)]
    assert states == ["miss", "hit-l1"]


async def test_only_reproducible_off_caches_everything() -> None:
    gw, backend, _, _ = make(only_reproducible=False)
    warm = request(Sampling(temperature=0.8))
    states = [(await ask(gw, req=warm))[1] for _ in range(2)]
    assert states == ["miss", "hit-l1"] and len(backend.calls_of("chat")) == 1


async def test_no_cache_skips_the_lookup_but_stores() -> None:
    gw, backend, _, _ = make()
    backend.reply("old")
    backend.reply("new")
    await ask(gw)
    chunks, state = await ask(gw, ctx(cache_control="no-cache"))
    assert state == "miss" and text(chunks) == "new"
    chunks, state = await ask(gw)
    assert state == "hit-l1" and text(chunks) == "new"
    _, state = await ask(gw, ctx(cache_control="max-age=0"))
    assert state == "miss" and len(backend.calls_of("chat")) == 3


async def test_no_store_does_not_store() -> None:
    gw, backend, _, _ = make()
    _, state = await ask(gw, ctx(cache_control="No-Store"))
    assert state == "miss"
    _, state = await ask(gw)
    assert state == "miss"  # nothing was stored
    _, state = await ask(gw, ctx(cache_control="no-store"))
    assert state == "hit-l1"  # may still be answered from the cache
    assert len(backend.calls_of("chat")) == 2


async def test_max_age_refuses_older_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    gw, backend, _, _ = make()
    await ask(gw)
    import llmux.policies.cache as module

    later = module.time.time() + 100
    monkeypatch.setattr(module.time, "time", lambda: later)
    _, state = await ask(gw, ctx(cache_control="max-age=60"))
    assert state == "miss"
    _, state = await ask(gw, ctx(cache_control="max-age=600"))
    assert state == "hit-l1"
    assert len(backend.calls_of("chat")) == 2


def test_cache_control_parsing() -> None:
    assert Control.parse("") == Control()
    assert Control.parse("no-cache") == Control(no_cache=True)
    assert Control.parse(" NO-STORE , max-age=30") == Control(no_store=True, max_age=30)
    assert Control.parse("max-age=0") == Control(no_cache=True, max_age=0)
    assert Control.parse("max-age=abc, private, x=1") == Control()  # lenient
    assert Control.parse('max-age="15"').max_age == 15


async def test_errors_are_not_cached() -> None:
    gw, backend, _, outcomes = make()
    backend.reply("a", "b", error=BackendError("the model failed"), error_after=1)
    with pytest.raises(BackendError):
        await ask(gw)
    chunks, state = await ask(gw)
    assert state == "miss" and text(chunks) == "Hello world"
    _, state = await ask(gw)
    assert state == "hit-l1" and len(backend.calls_of("chat")) == 2
    assert outcomes.seen[0].error is not None and outcomes.seen[0].cache is None


async def test_cancelled_streams_are_not_cached() -> None:
    gw, backend, _, outcomes = make()
    backend.reply("a", "b", "c", delay_s=0.01)
    stream = gw.chat(ctx(), request())
    assert (await anext(stream)).content == "a"
    await stream.aclose()  # the client went away
    _, state = await ask(gw)
    assert state == "miss" and len(backend.calls_of("chat")) == 2
    assert outcomes.seen[0].cancelled

    backend.reply("x", "y", delay_s=0.05)
    task = asyncio.ensure_future(ask(gw, ctx(cache_control="no-cache")))
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    chunks, state = await ask(gw)
    assert state == "hit-l1" and text(chunks) == "Hello world"  # the entry from before


async def test_load_replies_and_incomplete_replies_are_not_cached() -> None:
    gw, backend, _, _ = make()
    backend.reply("", done_reason="load")
    await ask(gw)
    _, state = await ask(gw)
    assert state == "miss"


async def test_single_flight_computes_once() -> None:
    gw, backend, _, outcomes = make()
    backend.reply("slow", " reply", delay_s=0.05)
    contexts = [ctx() for _ in range(8)]
    results = await asyncio.gather(*(ask(gw, c, stream=i % 2 == 0) for i, c in enumerate(contexts)))
    assert len(backend.calls_of("chat")) == 1
    assert {text(chunks) for chunks, _ in results} == {"slow reply"}
    states = sorted(state for _, state in results)
    assert states == ["hit-l1"] * 7 + ["miss"]
    assert sorted(str(o.cache) for o in outcomes.seen) == ["None"] + ["l1"] * 7


async def test_single_flight_shares_a_reply_too_large_to_store() -> None:
    gw, backend, _, _ = make(max_entry_bytes=100)
    backend.reply("x" * 500, delay_s=0.02)
    results = await asyncio.gather(*(ask(gw) for _ in range(4)))
    assert len(backend.calls_of("chat")) == 1  # not one after another
    assert {text(chunks) for chunks, _ in results} == {"x" * 500}
    assert (await ask(gw))[1] == "miss"  # and it was not stored


async def test_single_flight_waiters_compute_when_the_first_fails() -> None:
    gw, backend, _, _ = make()
    backend.reply("a", error=BackendError("broke"), error_after=1, delay_s=0.05)
    backend.reply("second", delay_s=0.05)
    first = asyncio.ensure_future(ask(gw))
    await asyncio.sleep(0.01)
    waiters = [asyncio.ensure_future(ask(gw)) for _ in range(3)]
    with pytest.raises(BackendError):
        await first
    results = await asyncio.gather(*waiters)
    assert len(backend.calls_of("chat")) == 2  # one waiter computed, the others waited for it
    assert {text(chunks) for chunks, _ in results} == {"second"}
    assert sorted(state for _, state in results) == ["hit-l1", "hit-l1", "miss"]


async def test_single_flight_waiter_computes_when_the_first_is_cancelled() -> None:
    gw, backend, _, _ = make()
    backend.reply("a", "b", delay_s=0.05)
    first = asyncio.ensure_future(ask(gw))
    await asyncio.sleep(0.01)
    waiter = asyncio.ensure_future(ask(gw))
    await asyncio.sleep(0.01)
    first.cancel()
    chunks, state = await waiter
    assert state == "miss" and text(chunks) == "Hello world"
    assert len(backend.calls_of("chat")) == 2


async def test_tenants_do_not_share_entries() -> None:
    gw, backend, _, _ = make()
    alice = Principal(kind="key", id="k1", name="alice", user_id="u1")
    bob = Principal(kind="key", id="k2", name="bob", user_id="u2")
    assert (await ask(gw, ctx(alice)))[1] == "miss"
    assert (await ask(gw, ctx(bob)))[1] == "miss"
    assert (await ask(gw, ctx(alice)))[1] == "hit-l1"
    assert len(backend.calls_of("chat")) == 2


async def test_embeddings_pass_through() -> None:
    from llmux.core.request import EmbedRequest

    gw, backend, _, _ = make()
    c = ctx()
    await gw.embed(c, EmbedRequest(MODEL, ("a",)))
    await gw.embed(c, EmbedRequest(MODEL, ("a",)))
    assert len(backend.calls_of("embed")) == 2 and CACHE_HEADER not in c.headers


async def test_a_request_that_cannot_be_keyed_is_served() -> None:
    gw, _backend, _, _ = make()
    odd = request(format={"enum": {1, 2}})  # a set: no stable form
    chunks, state = await ask(gw, req=odd)
    assert state == "bypass" and text(chunks) == "Hello world"


async def test_the_lru_is_bounded_by_bytes() -> None:
    gw, _backend, cache, _ = make(memory_bytes=2000)
    for i in range(30):
        await ask(gw, req=request(messages=(Message("user", f"question {i}"),)))
    assert cache.memory is not None and 0 < cache.memory.used <= 2000
    assert 1 < len(cache.memory) < 30
    _, state = await ask(gw, req=request(messages=(Message("user", "question 29"),)))
    assert state == "hit-l1"
    _, state = await ask(gw, req=request(messages=(Message("user", "question 0"),)))
    assert state == "miss"  # the least recently used went first


async def test_entries_over_max_entry_bytes_are_not_stored() -> None:
    gw, backend, _, _ = make(max_entry_bytes=100)
    backend.reply("x" * 500)
    await ask(gw)
    _, state = await ask(gw)
    assert state == "miss"


async def test_memory_ttl_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    gw, _backend, _, _ = make(memory_ttl_s=10)
    await ask(gw)
    import llmux.policies.cache as module

    later = module.time.time() + 11
    monkeypatch.setattr(module.time, "time", lambda: later)
    assert (await ask(gw))[1] == "miss"


def test_entries_encode_and_decode() -> None:
    from llmux.core.chunks import Metrics, TokenLogprob
    from llmux.core.request import ToolCall

    chunks = (
        ChatChunk(thinking="hm", model="m"),
        ChatChunk(
            content="hé", model="m", index=1,
            logprobs=(TokenLogprob("h", -0.5, (104,), (("h", -0.5, (104,)), ("x", -2.0, (120,)))),),
        ),
        ChatChunk(tool_calls=(ToolCall("f", {"a": [1, {"b": None}]}, "c1", 0),), model="m"),
        ChatChunk(done=True, done_reason="stop", metrics=Metrics(5, 1, 3, 0, 10, 0, 5, 5),
                  context=(1, 2, 3), model="m"),
    )  # fmt: skip
    entry = make_entry(chunks, 1234.5)
    back = decode(entry.data)
    assert back is not None and back.chunks == chunks and back.created == 1234.5
    assert decode(b"not json") is None and decode(b'{"v": 99, "at": 1, "c": []}') is None


# -- settings ---------------------------------------------------------------------------------


async def test_per_key_and_per_model_overrides() -> None:
    backend = FakeBackend(model_names=(MODEL, "other:latest"))
    gw, backend, _, _ = make(
        backend,
        keys={"nocache": {"enabled": False}, "eager": {"only_reproducible": False}},
        models={"other*": {"enabled": False}},
    )
    quiet = Principal(kind="key", id="k1", name="nocache")
    eager = Principal(kind="key", id="k2", name="eager")
    assert (await ask(gw, ctx(quiet)))[1] == "bypass"
    warm = request(Sampling(temperature=1.0))
    assert [(await ask(gw, ctx(eager), warm))[1] for _ in range(2)] == ["miss", "hit-l1"]
    other = dataclasses.replace(request(), model="other")
    assert (await ask(gw, req=other))[1] == "bypass"


def test_bad_settings_fail_at_startup(tmp_path: Path) -> None:
    with pytest.raises(LlmuxError, match=r"\[redis\] url"):
        build_cache(Settings(home=tmp_path, cache={"enabled": True, "redis": True}))
    with pytest.raises(LlmuxError, match="per model"):
        Cache(CacheSettings(enabled=True, models={"x": {"memory_bytes": 5}}))
    with pytest.raises(LlmuxError, match="invalid"):
        Cache(CacheSettings(enabled=True, models={"x": {"memory_ttl_s": -1}}))
    with pytest.raises(LlmuxError, match="top-level"):
        Cache(CacheSettings(enabled=True, keys={"k": {"memory_bytes": 5}}))
    assert build_cache(Settings(home=tmp_path)) is None  # off by default
    on_for_a_key = Settings(home=tmp_path, cache={"keys": {"k": {"enabled": True}}})
    assert build_cache(on_for_a_key) is not None


# -- Redis ------------------------------------------------------------------------------------


async def test_l2_in_redis_survives_a_restart(redis_url: str, prefix: str) -> None:
    redis = RedisCache(redis_url, prefix)
    gw, _backend, cache, _outcomes = make(l2=redis, redis=True)
    first, state = await ask(gw, stream=False)
    assert state == "miss"
    await redis.flush()
    await cache.aclose()
    # a new process: an empty L1, the same Redis
    again = RedisCache(redis_url, prefix)
    gw2, backend2, cache2, outcomes2 = make(l2=again, redis=True)
    chunks, state = await ask(gw2)
    assert state == "hit-l2" and text(chunks) == text(first)
    chunks, state = await ask(gw2, stream=False)
    assert state == "hit-l1" and text(chunks) == text(first)  # the L2 hit filled L1
    assert backend2.calls_of("chat") == []
    assert [o.cache for o in outcomes2.seen] == ["l2", "l1"]
    keys = [k async for k in again.redis.scan_iter(match=prefix + "cache:*")]
    assert len(keys) == 1
    ttl = await again.redis.pttl(keys[0])
    assert 3_500_000 < ttl <= 3_600_000
    await cache2.aclose()


async def test_redis_only(redis_url: str, prefix: str) -> None:
    gw, _backend, cache, _ = make(l2=RedisCache(redis_url, prefix), redis=True, memory_bytes=0)
    assert (await ask(gw))[1] == "miss"
    assert cache.redis is not None
    await cache.redis.flush()
    assert [(await ask(gw))[1] for _ in range(2)] == ["hit-l2", "hit-l2"]
    await cache.aclose()


async def test_a_failing_redis_is_a_miss(caplog: pytest.LogCaptureFixture) -> None:
    down = RedisCache("redis://127.0.0.1:1/0", "llmux-test:")
    gw, backend, cache, _ = make(l2=down, redis=True, memory_bytes=0)
    for _ in range(2):
        chunks, state = await ask(gw)
        assert state == "miss" and text(chunks) == "Hello world"
    await down.flush()
    assert "Redis" in caplog.text and "sky" not in caplog.text  # logged, without the prompt
    assert len(backend.calls_of("chat")) == 2
    await cache.aclose()
    # with L1 on, the reply is still served from memory
    gw, backend, cache, _ = make(l2=RedisCache("redis://127.0.0.1:1/0", "x:"), redis=True)
    assert [(await ask(gw))[1] for _ in range(2)] == ["miss", "hit-l1"]
    await cache.aclose()
