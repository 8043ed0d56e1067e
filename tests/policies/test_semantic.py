"""The semantic cache at the gateway, around a fake backend whose embeddings are chosen
per text: a hit above the threshold, a miss below, the negation guard, the partition
(the tenant and everything but the last user message), failures of the embedding
model, eligibility, Cache-Control, the bounded index, settings."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest

from llmux.config import Settings
from llmux.core.chunks import EmbedResult
from llmux.core.context import Principal, RequestContext
from llmux.core.request import ChatRequest, EmbedRequest, Message, Sampling
from llmux.errors import BackendError, LlmuxError
from llmux.gateway import Gateway
from llmux.policies.cache import Cache
from llmux.policies.cachestore import MemoryCache
from llmux.policies.meter import CACHE_HEADER
from llmux.policies.semantic import SEMANTIC_ROUTE, Semantic
from llmux.policies.settings import CacheSettings
from llmux.services import build_cache
from tests.policies.test_cache import MODEL, Outcomes, ask, ctx, text
from tests.support.fakes import Call, FakeBackend

pytestmark = pytest.mark.anyio
EMBED = "embed:latest"
ON = "How do I turn on the lights?"


def towards(angle_deg: float) -> list[float]:
    """A vector at ``angle_deg`` from (1, 0, 0): cosine = cos(angle)."""
    a = math.radians(angle_deg)
    return [math.cos(a), math.sin(a), 0.0]


VECTORS = {
    ON: towards(0),
    "How can I switch the lights on?": towards(8),  # cosine 0.990
    "How do I turn off the lights?": towards(3),  # cosine 0.999: only the guard tells
    "Lights: how do I get them on?": towards(30),  # cosine 0.866: below the threshold
    "What is the capital of France?": [0.0, 0.0, 1.0],
}


class Embedder(FakeBackend):
    """Embeddings from :data:`VECTORS` (scaled: the cache normalises); fails on demand."""

    def __init__(self) -> None:
        super().__init__(model_names=(MODEL, EMBED))
        self.failure: BaseException | None = None

    async def embed(self, ctx: RequestContext, request: EmbedRequest) -> EmbedResult:
        self.calls.append(Call("embed", ctx, (request,)))
        if self.failure is not None:
            raise self.failure
        self._known(request.model)
        return EmbedResult(
            request.model, [[3 * x for x in VECTORS[t]] for t in request.inputs], 5, 1, 0
        )


def make(**settings: Any) -> tuple[Gateway, Embedder, Cache, Outcomes]:
    backend = Embedder()
    config = CacheSettings(
        **{"enabled": True, "semantic": True, "semantic_model": EMBED, **settings}
    )
    semantic = Semantic(config.semantic_entries)
    cache = Cache(config, MemoryCache(config.memory_bytes), semantic=semantic)
    outcomes = Outcomes()
    gateway = Gateway(backend, policies=[outcomes, cache])
    cache.bind(gateway.served_by, gateway.embed)
    return gateway, backend, cache, outcomes


def asking(words: str, *before: Message, **fields: Any) -> ChatRequest:
    sampling = fields.pop("sampling", Sampling(temperature=0))
    return ChatRequest(MODEL, (*before, Message("user", words)), sampling=sampling, **fields)


def embeds(backend: FakeBackend) -> list[EmbedRequest]:
    return [c.args[0] for c in backend.calls_of("embed")]


async def test_a_paraphrase_above_the_threshold_is_a_semantic_hit() -> None:
    gw, backend, _, outcomes = make()
    backend.reply("Flip", " the switch")
    first, state = await ask(gw, req=asking(ON))
    assert state == "miss" and text(first) == "Flip the switch"
    again, state = await ask(gw, req=asking("How can I switch the lights on?"), stream=False)
    assert state == "hit-semantic" and text(again) == "Flip the switch"
    assert len(backend.calls_of("chat")) == 1
    assert again[-1].metrics is not None and again[-1].metrics.cached_tokens > 0
    assert [o.cache for o in outcomes.seen].count("semantic") == 1  # embeddings are seen too
    assert outcomes.seen[-1].cache == "semantic"
    # the exact cache still answers the exact repeat, before any embedding
    n = len(embeds(backend))
    assert (await ask(gw, req=asking(ON)))[1] == "hit-l1" and len(embeds(backend)) == n


async def test_below_the_threshold_is_a_miss() -> None:
    gw, _, _, _ = make(semantic_threshold=0.95)
    await ask(gw, req=asking(ON))
    assert (await ask(gw, req=asking("Lights: how do I get them on?")))[1] == "miss"
    gw, _, _, _ = make(semantic_threshold=0.85)  # the same pair under a lower one
    await ask(gw, req=asking(ON))
    assert (await ask(gw, req=asking("Lights: how do I get them on?")))[1] == "hit-semantic"


async def test_the_negation_guard_blocks_a_near_identical_vector() -> None:
    gw, backend, _, _ = make()
    await ask(gw, req=asking(ON))
    assert (await ask(gw, req=asking("How do I turn off the lights?")))[1] == "miss"
    assert len(backend.calls_of("chat")) == 2
    # both are stored now: each finds its own, never the other's
    backend.reply("never this")
    assert (await ask(gw, req=asking("How can I switch the lights on?")))[1] == "hit-semantic"


async def test_tenants_are_partitions() -> None:
    gw, _, _, _ = make()
    alice = Principal(kind="key", id="k1", name="alice", user_id="u1")
    bob = Principal(kind="key", id="k2", name="bob", user_id="u2")
    await ask(gw, ctx(alice), asking(ON))
    assert (await ask(gw, ctx(bob), asking("How can I switch the lights on?")))[1] == "miss"
    assert (await ask(gw, ctx(alice), asking("How can I switch the lights on?")))[
        1
    ] == "hit-semantic"


@pytest.mark.parametrize(
    "change",
    [
        {"before": (Message("system", "Answer in French."),)},
        {"before": (Message("user", "Hi"), Message("assistant", "Hello!"))},
        {"sampling": Sampling(temperature=0, num_predict=5)},
        {"sampling": Sampling(seed=7)},
        {"format": "json"},
        {"think": True},
    ],
)
async def test_everything_but_the_last_user_message_is_the_partition(
    change: dict[str, Any],
) -> None:
    gw, _, _, _ = make()
    await ask(gw, req=asking(ON))
    change = dict(change)
    before = change.pop("before", ())
    other = asking("How can I switch the lights on?", *before, **change)
    assert (await ask(gw, req=other))[1] == "miss"
    # the same change on both sides: they share a partition
    assert (await ask(gw, req=asking(ON, *before, **change)))[1] == "hit-semantic"


async def test_another_route_or_model_is_another_partition() -> None:
    gw, backend, _, _ = make()
    backend.model_names = (MODEL, EMBED, "other:latest")
    await ask(gw, req=asking(ON))
    openai = RequestContext("openai", "/v1/chat/completions")
    assert (await ask(gw, openai, asking("How can I switch the lights on?")))[1] == "miss"
    other = dataclasses.replace(asking("How can I switch the lights on?"), model="other")
    assert (await ask(gw, req=other))[1] == "miss"


async def test_an_embedding_failure_is_a_miss_and_logged_without_the_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gw, backend, _, _ = make()
    await ask(gw, req=asking(ON))
    backend.failure = BackendError("the embedding model broke")
    chunks, state = await ask(gw, req=asking("How can I switch the lights on?"))
    assert state == "miss" and text(chunks) == "Hello world"
    assert "the embedding model broke" in caplog.text and "lights" not in caplog.text
    backend.failure = None
    gw, backend, _, _ = make(semantic_model="missing")  # no such model: a miss as well
    assert (await ask(gw, req=asking(ON)))[1] == "miss"
    assert (await ask(gw, req=asking("How can I switch the lights on?")))[1] == "miss"
    assert "missing" in caplog.text


async def test_the_embedding_is_internal_and_passes_through_the_cache() -> None:
    gw, backend, _, outcomes = make()
    limited = Principal(kind="key", id="k1", name="alice", models=("fake*",))
    c = ctx(limited)
    await ask(gw, c, asking(ON))
    (call,) = backend.calls_of("embed")
    assert call.ctx is not None and call.ctx.route == SEMANTIC_ROUTE and call.ctx.internal
    assert call.ctx.principal.id == "k1" and call.ctx.principal.models == ()  # the server's model
    assert call.ctx.request_id == c.request_id and CACHE_HEADER not in call.ctx.headers
    assert call.args[0] == EmbedRequest(EMBED, (ON,), truncate=False)
    assert len(outcomes.seen) == 2  # the embedding's outcome, then the chat's


async def test_only_a_last_user_message_is_compared() -> None:
    gw, backend, _, _ = make()
    assistant_last = dataclasses.replace(
        asking(ON), messages=(Message("user", ON), Message("assistant", "Sure"))
    )
    raw = ChatRequest(MODEL, prompt=ON, sampling=Sampling(temperature=0))
    for req in (assistant_last, raw, asking("x" * 5000), asking("   ")):
        await ask(gw, req=req)
    two_prompts = [c async for c in gw.chat(ctx(), asking(ON), asking(ON))]
    assert two_prompts and embeds(backend) == []


async def test_off_by_default_and_per_model() -> None:
    backend = Embedder()
    cache = Cache(CacheSettings(enabled=True), MemoryCache(2**20))
    gw = Gateway(backend, policies=[cache])
    cache.bind(gw.served_by, gw.embed)
    await ask(gw, req=asking(ON))
    assert (await ask(gw, req=asking("How can I switch the lights on?")))[1] == "miss"
    assert embeds(backend) == []
    gw, backend, _, _ = make(models={"fake*": {"semantic": False}})
    await ask(gw, req=asking(ON))
    assert embeds(backend) == []


async def test_cache_control() -> None:
    gw, backend, _, _ = make()
    await ask(gw, ctx(cache_control="no-store"), asking(ON))
    assert (await ask(gw, req=asking("How can I switch the lights on?")))[1] == "miss"
    assert (await ask(gw, ctx(cache_control="no-cache"), asking(ON)))[1] == "miss"  # stored
    paraphrase = asking("How can I switch the lights on?")
    assert (await ask(gw, ctx(cache_control="no-cache"), paraphrase))[1] == "miss"
    assert len(backend.calls_of("chat")) == 4


async def test_the_index_is_bounded_and_forgets_replies_no_longer_stored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gw, _, cache, _ = make(semantic_entries=1)
    assert cache.semantic is not None
    await ask(gw, req=asking(ON))
    await ask(gw, req=asking("What is the capital of France?"))
    assert len(cache.semantic.index) == 1  # the lights went first
    assert (await ask(gw, req=asking("How can I switch the lights on?")))[1] == "miss"
    gw, _, cache, _ = make(memory_ttl_s=10)
    assert cache.semantic is not None
    await ask(gw, req=asking(ON))
    import llmux.policies.cache as module

    later = module.time.time() + 11
    monkeypatch.setattr(module.time, "time", lambda: later)
    assert (await ask(gw, req=asking("How can I switch the lights on?")))[1] == "miss"
    assert len(cache.semantic.index) == 1  # the expired pointer went, the new one came


def test_settings(tmp_path: Path) -> None:
    with pytest.raises(LlmuxError, match="semantic_model"):
        Cache(CacheSettings(enabled=True, semantic=True))
    with pytest.raises(LlmuxError, match="semantic_model"):
        Cache(CacheSettings(enabled=True, models={"x*": {"semantic": True}}))
    with pytest.raises(LlmuxError, match="top-level"):
        Cache(CacheSettings(enabled=True, keys={"k": {"semantic_entries": 5}}))
    with pytest.raises(LlmuxError, match="per"):
        Cache(CacheSettings(enabled=True, models={"x": {"semantic_entries": 5}}))
    with pytest.raises(ValueError):
        CacheSettings(semantic_threshold=1.5)
    plain = build_cache(Settings(home=tmp_path, cache={"enabled": True}))
    assert plain is not None and plain.semantic is None
    on = {"enabled": True, "semantic": True, "semantic_model": EMBED, "semantic_entries": 7}
    built = build_cache(Settings(home=tmp_path, cache=on))
    assert built is not None and built.semantic is not None and built.semantic.index.capacity == 7
