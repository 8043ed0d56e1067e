"""Policies: composable layers around every model operation.

A policy is an object with ``__call__(ctx, op, next) -> AsyncIterator`` and
``finished(ctx, op, outcome)``. ``__call__`` may answer by itself (a cache hit), refuse
by raising an :mod:`llmux.errors` exception (auth, limits), change the operation before
calling ``next``, or wrap the stream ``next`` returns (redaction, moderation). The items
are :class:`~llmux.core.chunks.ChatChunk` for chat, one
:class:`~llmux.core.chunks.EmbedResult` for embeddings, and raw ``bytes`` on the relay
fast path, where no body was parsed (``op.requests`` is empty).

``needs_body``: a policy that reads or changes request or reply content says so; while
any configured policy does, the relay fast path is off. Metadata-only policies (auth,
request-rate limits, metrics, metadata audit) keep it.

``finished`` is called once at the end of every operation, the fast path included, with
the :class:`Outcome`: usage, finish reason, latency, time to first item, the error
that ended it, if any, and whether the response cache answered (read off the
``X-Llmux-Cache`` header it sets in ``ctx.headers``). :func:`compose` chains the policies in their configured order
around the backend call; the gateway (``llmux.gateway``) owns the chain.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, Protocol

from llmux.core.chunks import Metrics
from llmux.core.context import RequestContext
from llmux.core.request import ChatRequest, EmbedRequest
from llmux.errors import LlmuxError

OpKind = Literal["chat", "embed"]


@dataclass(frozen=True, slots=True)
class Operation:
    """One model operation as policies see it."""

    kind: OpKind
    model: str  # the resolved name
    stream: bool = False
    backend: str = ""  # "local", "pool", "relay"
    requests: tuple[ChatRequest, ...] = ()  # chat: one, or one per completion prompt
    embed: EmbedRequest | None = None
    body_size: int = 0  # the relay fast path: the unparsed body's length
    max_output: int | None = None  # ... and its max_tokens / num_predict
    choices: int = 1  # ... and its n

    @property
    def has_body(self) -> bool:
        return bool(self.requests) or self.embed is not None


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    latency_s: float = 0.0
    ttft_s: float | None = None  # first item (chunk, result or bytes)
    error: LlmuxError | None = None
    cancelled: bool = False  # the client went away first
    usage_known: bool = False  # the backend reported the usage (a final chunk, a usage field)
    pieces: int = 0  # content pieces streamed (what a cancelled stream had generated)
    served: str = ""  # the model that answered, as the backend named it
    cache: str | None = None  # "l1" / "l2": the response cache answered (policies/cache.py)
    started: float = 0.0  # time.perf_counter() when the operation began
    metrics: Metrics | None = None  # the last final chunk's timings (the engine's phases)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.cancelled


Handler = Callable[[RequestContext, Operation], AsyncIterator[Any]]


class Policy(Protocol):
    needs_body: bool

    def __call__(self, ctx: RequestContext, op: Operation, next: Handler) -> AsyncIterator[Any]: ...

    def finished(self, ctx: RequestContext, op: Operation, outcome: Outcome) -> None: ...


class PassThrough:
    """A policy that does nothing: subclass it and override what you need."""

    needs_body = False

    def __call__(self, ctx: RequestContext, op: Operation, next: Handler) -> AsyncIterator[Any]:
        return next(ctx, op)

    def finished(self, ctx: RequestContext, op: Operation, outcome: Outcome) -> None:
        return None


def compose(policies: Sequence[Policy], handler: Handler) -> Handler:
    """Wrap ``handler`` so the first policy runs outermost."""
    for policy in reversed(policies):
        handler = partial(policy, next=handler)
    return handler
