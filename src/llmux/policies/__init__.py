"""Policies: composable layers around every generation.

A policy is ``async def policy(ctx, request, next) -> AsyncIterator[ChatChunk]``. It
may answer by itself (a cache hit, a refusal raised as an error), change the request
before calling ``next``, or wrap the stream ``next`` returns (redaction, moderation,
usage counting, audit). :func:`compose` chains them in the configured order around
the backend call; the chain is empty until those features land.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from typing import Protocol

from llmux.core.chunks import ChatChunk
from llmux.core.request import ChatRequest, RequestContext

Handler = Callable[[RequestContext, ChatRequest], AsyncIterator[ChatChunk]]


class Policy(Protocol):
    def __call__(
        self, ctx: RequestContext, request: ChatRequest, next: Handler
    ) -> AsyncIterator[ChatChunk]: ...


def compose(policies: Sequence[Policy], handler: Handler) -> Handler:
    """Wrap ``handler`` so the first policy runs outermost."""
    for policy in reversed(policies):
        handler = partial(policy, next=handler)
    return handler
