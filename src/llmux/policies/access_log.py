"""The request log: one line per model operation, and, with ``[server] log_bodies``, its
prompt and reply.

:class:`AccessLog` (``[server] access_log``, on by default) is metadata only, so the
relay fast path stays on: at the end of every operation it logs one ``llmux.access``
line whose fields (:func:`request_fields`) are the request id, principal, API, route,
operation, model requested and served, backend and upstream member, HTTP status (499:
the client left first) and error code, finish reason, token counts, latency and time to
first item, the cache level, a quota refusal, the number of values redacted and the
moderation verdict. Never a prompt, a reply or a credential. JSON logs write the fields
as keys, text logs as ``key=value`` (``observability/logs.py``).

:class:`BodyLog` (only in the chain while ``[server] log_bodies`` is on, a debugging
aid) logs the caller's messages and the reply at debug level under
``llmux.bodies.requests``, each text passed through the redactor's scrubber and the
secret mask first (and the log filter after).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from llmux.core.chunks import ChatChunk
from llmux.core.context import RequestContext
from llmux.observability.logs import BODIES, FIELDS, REQUEST_ID, mask_secrets
from llmux.policies import Handler, Operation, Outcome, PassThrough

log = logging.getLogger("llmux.access")
bodies = logging.getLogger(BODIES + ".requests")
BODY_CHARS = 4000  # what a body line shows of a prompt or a reply (its end)
CANCELLED = 499  # the status nginx logs for a client that closed the connection first


def status_code(outcome: Outcome) -> int:
    """The HTTP status the client got (or would have: 499 when it left first)."""
    if outcome.error is not None:
        return outcome.error.status
    return CANCELLED if outcome.cancelled else 200


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def request_fields(ctx: RequestContext, op: Operation, outcome: Outcome) -> dict[str, Any]:
    """The request line's fields (metadata only; ``ctx.facts["body"]`` is never read)."""
    u, facts, error = outcome.usage, ctx.facts, outcome.error
    redactions = facts.get("redactions")
    fields: dict[str, Any] = {
        "principal": ctx.principal.name,
        "principal_id": ctx.principal.id,
        "api": ctx.api,
        "route": ctx.route,
        "operation": op.kind,
        "model": op.model,
        "served": outcome.served or None,
        "backend": op.backend or None,
        "upstream": facts.get("upstream"),
        "stream": op.stream,
        "status": status_code(outcome),
        "error": error.code if error is not None else None,
        "finish_reason": outcome.finish_reason,
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "cached_tokens": u.cached_tokens,
        "latency_ms": _ms(outcome.latency_s),
        "ttft_ms": _ms(outcome.ttft_s),
        "cache": outcome.cache,
        "refused": _text(facts.get("refused")),
        "redactions": sum(redactions.values()) if isinstance(redactions, dict) else None,
        "moderation": _text(facts.get("moderation")),
        "client": ctx.client,
    }
    if REQUEST_ID.get() != ctx.request_id:  # outside the request's task (a batch worker)
        fields["request_id"] = ctx.request_id
    return fields


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list | tuple | set | frozenset):
        return ",".join(sorted(str(v) for v in value)) or None
    return str(value)


class AccessLog(PassThrough):
    needs_body = False

    def finished(self, ctx: RequestContext, op: Operation, outcome: Outcome) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        ctx.facts["logged"] = True  # the HTTP request's line (server/requestlog.py) is this one
        fields = request_fields(ctx, op, outcome)
        log.info("%s %s %d", op.kind, op.model, fields["status"], extra={FIELDS: fields})


class BodyLog(PassThrough):
    """Prompts and replies in the log, scrubbed: for debugging only."""

    needs_body = True

    def __init__(self, scrub: Callable[[str], str]) -> None:
        self.scrub = scrub

    def _clean(self, text: str) -> str:
        return mask_secrets(self.scrub(text[-BODY_CHARS:]))

    def __call__(self, ctx: RequestContext, op: Operation, next: Handler) -> AsyncIterator[Any]:
        if not bodies.isEnabledFor(logging.DEBUG) or not op.has_body:
            return next(ctx, op)
        self._prompt(op)
        return self._replies(op, next(ctx, op))

    def _prompt(self, op: Operation) -> None:
        if op.embed is not None:
            for i, text in enumerate(op.embed.inputs):
                bodies.debug("%s input %d: %s", op.model, i, self._clean(text))
            return
        for request in op.requests:
            lines = [f"{m.role}: {m.content}" for m in request.messages]
            lines += [f"{name}: {text}" for name, text in
                      (("prompt", request.prompt), ("suffix", request.suffix)) if text]  # fmt: skip
            bodies.debug("%s prompt: %s", op.model, self._clean("\n".join(lines)))

    async def _replies(self, op: Operation, items: AsyncIterator[Any]) -> AsyncIterator[Any]:
        texts: dict[int, list[str]] = {}
        try:
            async for item in items:
                if isinstance(item, ChatChunk) and item.content:
                    texts.setdefault(item.index, []).append(item.content)
                yield item
        finally:
            for index, parts in sorted(texts.items()):
                bodies.debug("%s reply %d: %s", op.model, index, self._clean("".join(parts)))
