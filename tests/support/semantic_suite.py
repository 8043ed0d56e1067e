"""The semantic cache's suite of pairs (tests/policies/semantic_pairs.json), scored with a
real embedding model through a gateway: what the test and ``bench/semantic.py`` share.

Each pair is asked as the cache asks it: :meth:`Semantic.probe` for the stored prompt
and the new one (the same partition: the requests differ in their last user message
only), the stored one added to a fresh index, then :meth:`SemanticIndex.nearest` at a
threshold of 0 to read the similarity, and the negation guard's verdict. A pair is a
hit at threshold ``t`` when its similarity is at least ``t`` and the guard lets it pass.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from llmux.core.chunks import EmbedResult
from llmux.core.context import RequestContext
from llmux.core.request import ChatRequest, EmbedRequest, Message, Sampling
from llmux.policies import Operation
from llmux.policies.polarity import compatible
from llmux.policies.semantic import Semantic

PAIRS = Path(__file__).resolve().parents[1] / "policies" / "semantic_pairs.json"
KINDS = ("paraphrases", "negations", "unrelated")
Embed = Callable[[RequestContext, EmbedRequest], Awaitable[EmbedResult]]


@dataclass(frozen=True, slots=True)
class Scored:
    kind: str  # paraphrases (a hit is wanted), negations or unrelated (a hit is wrong)
    stored: str
    asked: str
    similarity: float
    guard: bool  # the negation guard lets the pair through

    def hit(self, threshold: float) -> bool:
        return self.guard and self.similarity >= threshold


def load_pairs(path: Path = PAIRS) -> dict[str, list[tuple[str, str]]]:
    data = json.loads(path.read_text())
    return {kind: [(a, b) for a, b in data[kind]] for kind in KINDS}


def operation(model: str, words: str) -> Operation:
    request = ChatRequest(model, (Message("user", words),), sampling=Sampling(temperature=0))
    return Operation("chat", model, requests=(request,))


async def score(embed: Embed, embed_model: str, chat_model: str = "chat") -> list[Scored]:
    """Every pair of the suite, with its similarity and the guard's verdict."""
    out = []
    ctx = RequestContext("ollama", "/api/chat")
    for kind, pairs in load_pairs().items():
        for stored, asked in pairs:
            semantic = Semantic(8, embed)
            first = await semantic.probe(ctx, operation(chat_model, stored), "", embed_model)
            second = await semantic.probe(ctx, operation(chat_model, asked), "", embed_model)
            if first is None or second is None:
                raise RuntimeError(f"{embed_model!r} did not embed the suite's texts")
            assert first.partition == second.partition
            similarity = float(first.vector @ second.vector)
            guard = compatible(first.signature, second.signature)
            semantic.index.add(first, "stored")
            near = semantic.index.nearest(second, 1e-9)
            assert (near is not None) == guard or similarity <= 1e-9  # the index agrees
            out.append(Scored(kind, stored, asked, similarity, guard))
    return out


def rates(scored: list[Scored], threshold: float) -> dict[str, float]:
    """The share of each kind's pairs that hit at ``threshold``."""
    out = {}
    for kind in KINDS:
        pairs = [s for s in scored if s.kind == kind]
        out[kind] = sum(s.hit(threshold) for s in pairs) / len(pairs) if pairs else 0.0
    return out
