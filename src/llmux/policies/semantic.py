"""The semantic cache: a chat request worded differently from a stored one may get its
reply (``[cache] semantic = true``; docs/guardrails.md#semantic-cache).

After an exact-key miss, :meth:`Semantic.probe` embeds the request's **last user
message** with ``[cache] semantic_model``, through the gateway (``Gateway.embed``, so
the model runs on the local engine or an upstream), and :meth:`SemanticIndex.nearest`
looks for the closest stored prompt in the request's **partition**: the exact cache key
(``cachekey.py``) of the request with that message's text blanked. The partition holds
the tenant, the route, the model and what serves it, the system prompt, every earlier
message and every option, so a semantic hit can differ from the stored request in the
wording of that one message only. A hit needs cosine similarity of at least
``semantic_threshold`` and the negation guard (``polarity.py``); it points at the
stored entry's exact key, which the cache then reads as usual (L1 or L2, its TTL,
``max-age``).

The index is in this process (each replica has its own; the entries may be in Redis):
at most ``semantic_entries`` vectors, least recently used first out, each with its
exact key and the guard's signature of the prompt, never the prompt itself.

Eligible: one request (not several completion prompts) of chat messages whose last
message is the user's, of at most :data:`MAX_CHARS` characters, without Ollama's
``context`` tokens. The embedding runs with ``truncate = false``, so a prompt longer
than the embedding model's context is not compared by its beginning only. The call
carries :data:`SEMANTIC_ROUTE` (the cache passes embeddings through, so it does not
recurse) and the caller's principal without its model patterns (the semantic model is
the server's choice, not the caller's). A failure (no such model, an error, a timeout)
never fails the request: it is logged, without the text, and is a miss.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from llmux.core.chunks import EmbedResult
from llmux.core.context import INTERNAL, RequestContext
from llmux.core.request import ChatRequest, EmbedRequest
from llmux.errors import LlmuxError
from llmux.policies import Operation
from llmux.policies.cachekey import KeyMaker
from llmux.policies.polarity import Signature, compatible, signature

log = logging.getLogger(__name__)
SEMANTIC_ROUTE = INTERNAL + "semantic-cache"
PARTITION_VERSION = "llmux-semantic-1"
MAX_CHARS = 2000  # longer prompts are not embedded
TIMEOUT_S = 5.0  # an embedding that takes longer is a miss
Vector = npt.NDArray[np.float32]
Embed = Callable[[RequestContext, EmbedRequest], Awaitable[EmbedResult]]


@dataclass(frozen=True, slots=True)
class Probe:
    """A request's place in the index: its partition, its unit vector and signature."""

    partition: str
    vector: Vector
    signature: Signature


def last_user_text(op: Operation) -> str | None:
    """The text the semantic cache compares, when the operation is eligible."""
    if len(op.requests) != 1:
        return None
    r = op.requests[0]
    if not r.messages or r.prompt is not None or r.context or r.return_context:
        return None
    last = r.messages[-1]
    text = last.content.strip()
    if last.role != "user" or not text or len(text) > MAX_CHARS:
        return None
    return text


def blanked(request: ChatRequest) -> ChatRequest:
    """``request`` with its last message's text removed: what its partition is keyed by."""
    last = dataclasses.replace(request.messages[-1], content="")
    return dataclasses.replace(request, messages=(*request.messages[:-1], last))


class Semantic:
    """Probes (embedding through the gateway) and the index."""

    def __init__(self, entries: int, embed: Embed | None = None) -> None:
        self.index = SemanticIndex(entries)
        self.keys = KeyMaker(PARTITION_VERSION)
        self._embed = embed
        self._logged = 0.0

    def bind(self, embed: Embed) -> None:
        self._embed = embed

    async def probe(
        self, ctx: RequestContext, op: Operation, served: str, model: str
    ) -> Probe | None:
        """The request's probe, or None: not eligible, or the embedding failed."""
        text = last_user_text(op)
        if text is None or self._embed is None or not model:
            return None
        try:
            request = blanked(op.requests[0])
            key = self.keys.key(ctx, dataclasses.replace(op, requests=(request,)), served)
            inner = RequestContext(
                api=ctx.api, route=SEMANTIC_ROUTE, request_id=ctx.request_id, client=ctx.client,
                principal=dataclasses.replace(ctx.principal, models=()),
            )  # fmt: skip
            embed = self._embed(inner, EmbedRequest(model, (text,), truncate=False))
            result = await asyncio.wait_for(embed, TIMEOUT_S)
            vector = unit(result.embeddings[0])
        except Exception as exc:  # noqa: BLE001 - the semantic cache never fails a request
            self._failed(model, exc)
            return None
        return Probe(f"{model}|{key}", vector, signature(text))

    def _failed(self, model: str, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._logged > 60:
            self._logged = now
            why = str(exc) if isinstance(exc, LlmuxError) else "see the debug log"
            log.warning(
                "semantic cache: embedding with %r failed (%s: %s); a miss",
                model, type(exc).__name__, why,
            )  # fmt: skip
        log.debug("semantic cache: embedding failed", exc_info=exc)


def unit(values: list[float]) -> Vector:
    vector = np.asarray(values, dtype=np.float32)
    norm = float(np.linalg.norm(vector))
    if vector.ndim != 1 or not vector.size or not np.isfinite(norm) or norm == 0:
        raise ValueError("the embedding model returned an empty or degenerate vector")
    return vector / norm


class _Partition:
    """One partition's vectors as rows of a matrix; a freed row is zero (similarity 0)."""

    __slots__ = ("free", "keys", "signatures", "vectors")

    def __init__(self, dim: int) -> None:
        self.vectors: Vector = np.zeros((4, dim), dtype=np.float32)
        self.keys: list[str | None] = [None] * 4
        self.signatures: list[Signature | None] = [None] * 4
        self.free = [3, 2, 1, 0]

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def live(self) -> int:
        return len(self.keys) - len(self.free)

    def put(self, vector: Vector, key: str, sig: Signature) -> int:
        if not self.free:
            n = len(self.keys)
            self.vectors = np.vstack([self.vectors, np.zeros_like(self.vectors)])
            self.keys += [None] * n
            self.signatures += [None] * n
            self.free = list(range(2 * n - 1, n - 1, -1))
        slot = self.free.pop()
        self.vectors[slot] = vector
        self.keys[slot] = key
        self.signatures[slot] = sig
        return slot

    def clear(self, slot: int) -> None:
        self.vectors[slot] = 0
        self.keys[slot] = None
        self.signatures[slot] = None
        self.free.append(slot)


class SemanticIndex:
    """Vectors by partition, pointing at exact keys; at most ``capacity`` in all, least
    recently used (added or hit) first out."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._parts: dict[str, _Partition] = {}
        self._order: OrderedDict[tuple[str, str], int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._order)

    def add(self, probe: Probe, key: str) -> None:
        part = self._parts.get(probe.partition)
        if part is not None and part.dim != probe.vector.shape[0]:  # another model's vectors
            for at in [at for at in self._order if at[0] == probe.partition]:
                del self._order[at]
            part = None
        if part is None:
            part = self._parts[probe.partition] = _Partition(probe.vector.shape[0])
        at = (probe.partition, key)
        if at in self._order:
            part.clear(self._order.pop(at))
        self._order[at] = part.put(probe.vector, key, probe.signature)
        while len(self._order) > self.capacity:
            (partition, _), slot = self._order.popitem(last=False)
            self._clear(partition, slot)

    def nearest(self, probe: Probe, threshold: float) -> tuple[str, float] | None:
        """The exact key of the most similar stored prompt at or above ``threshold``
        that the guard lets through, with its similarity."""
        part = self._parts.get(probe.partition)
        if part is None or part.dim != probe.vector.shape[0]:
            return None
        scores = part.vectors @ probe.vector
        above = np.flatnonzero(scores >= threshold)
        for slot in above[np.argsort(-scores[above])]:
            key, sig = part.keys[slot], part.signatures[slot]
            if key is not None and sig is not None and compatible(sig, probe.signature):
                self._order.move_to_end((probe.partition, key))
                return key, float(scores[slot])
        return None

    def drop(self, partition: str, key: str) -> None:
        """Forget an entry (its reply is no longer stored)."""
        slot = self._order.pop((partition, key), None)
        if slot is not None:
            self._clear(partition, slot)

    def _clear(self, partition: str, slot: int) -> None:
        part = self._parts[partition]
        part.clear(slot)
        if part.live == 0:
            del self._parts[partition]

    def clear(self) -> None:
        self._parts.clear()
        self._order.clear()
