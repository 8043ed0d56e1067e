"""The ``Audit`` policy: one record per model operation, outermost in the chain, so
it sees every refusal the others make (a rate limit, a budget, a flagged prompt).

Metadata only (``needs_body = False``: the relay fast path stays on). ``__call__``
feeds each item of the reply to an HMAC (the response hash) as it passes; the prompt
hash is the HMAC of the request body as the server read it (``ctx.facts["body"]``, put
there by the disconnect watch and the relay), or, for a caller without one, of the
canonical JSON of the operation's messages. A body over :data:`INLINE_BYTES` is hashed
on a thread while the model works. ``finished`` builds the record and appends it to the
spool, on the event loop, before the response's last bytes go out (spool.py).

While the spool cannot be written (a full disk), new model operations are refused
(503 ``policy_failed``): the trail fails closed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from llmux.audit.record import ReplyMac, prompt_hash, requests_form
from llmux.audit.spool import Spool
from llmux.core.context import INTERNAL, RequestContext
from llmux.errors import PolicyFailed
from llmux.policies import Handler, Operation, Outcome

INLINE_BYTES = 64 * 1024  # bodies up to this are hashed on the loop (~50 us)
SYNCED = "audit.synced"  # ctx.facts: the future of the record's fsync (wait_for_fsync)
REFUSED = "refused"  # in place of a Watch: the trail itself refused the operation


@dataclass(slots=True)
class Watch:
    """What ``__call__`` learns for ``finished``."""

    reply: ReplyMac
    prompt: asyncio.Future[str] | None = None


def status_of(op: Operation, outcome: Outcome) -> int:
    """The HTTP status the client got: an error's own, unless a stream had started."""
    if outcome.cancelled:
        return 499
    if outcome.error is None:
        return 200
    if op.stream and outcome.ttft_s is not None:
        return 200  # the error came as the stream's last line or event
    return outcome.error.status


def method_of(route: str) -> str:
    if route.startswith(INTERNAL):
        return "INTERNAL"
    return "WEBSOCKET" if route.endswith("/ws") else "POST"


class Audit:
    needs_body = False

    def __init__(self, spool: Spool, key: bytes, *, wait_for_fsync: bool = False) -> None:
        self.spool = spool
        self.key = key
        self.wait_for_fsync = wait_for_fsync

    def __call__(self, ctx: RequestContext, op: Operation, next: Handler) -> AsyncIterator[Any]:
        return self._watched(ctx, op, next)

    async def _watched(
        self, ctx: RequestContext, op: Operation, next: Handler
    ) -> AsyncIterator[Any]:
        if self.spool.failing is not None and not self.spool.retry():
            ctx.facts[_key(op)] = REFUSED  # nothing happened: no record to keep
            raise PolicyFailed(
                f"the audit trail cannot write its spool ({self.spool.failing}); model "
                "requests are refused until it can: free disk space at [audit] spool_dir"
            )
        watch = Watch(ReplyMac(self.key))
        body = ctx.facts.get("body")
        if isinstance(body, bytes) and len(body) > INLINE_BYTES:
            loop = asyncio.get_running_loop()
            watch.prompt = loop.run_in_executor(None, prompt_hash, self.key, body)
        ctx.facts[_key(op)] = watch
        try:
            async for item in next(ctx, op):
                watch.reply.feed(item)
                yield item
        except Exception:
            await _settled(watch.prompt)  # the record is made before the error is answered
            raise
        await _settled(watch.prompt)

    def finished(self, ctx: RequestContext, op: Operation, outcome: Outcome) -> None:
        watch = ctx.facts.pop(_key(op), None)
        if watch is REFUSED:
            return
        fields = self.fields(ctx, op, outcome)
        if isinstance(watch, Watch):
            fields["response_hash"] = watch.reply.hexdigest()
            pending = watch.prompt
            if pending is not None and not pending.done():  # cancelled: nobody waits
                pending.add_done_callback(lambda f: self._append(ctx, fields, f))
                return
            if pending is not None:
                self._append(ctx, fields, pending)
                return
        body = ctx.facts.get("body")
        data = body if isinstance(body, bytes) else requests_form(op.requests, op.embed)
        fields["prompt_hash"] = prompt_hash(self.key, data)
        self._append(ctx, fields)

    def _append(
        self, ctx: RequestContext, fields: dict[str, Any], prompt: asyncio.Future[str] | None = None
    ) -> None:
        if prompt is not None:
            fields["prompt_hash"] = None
            if not prompt.cancelled() and prompt.exception() is None:
                fields["prompt_hash"] = prompt.result()
        record = self.spool.append(fields)
        if self.wait_for_fsync:
            synced = self.spool.synced(record.seq)
            if synced is not None:
                ctx.facts[SYNCED] = synced

    @staticmethod
    def fields(ctx: RequestContext, op: Operation, outcome: Outcome) -> dict[str, Any]:
        p, facts, usage, error = ctx.principal, ctx.facts, outcome.usage, outcome.error
        redactions = facts.get("redactions")
        return {
            "kind": "model",
            "request_id": ctx.request_id,
            "client_ip": ctx.client,
            "principal_kind": p.kind,
            "principal_id": p.id,
            "principal_name": p.name,
            "principal_user": p.user_id,
            "method": method_of(ctx.route),
            "route": ctx.route,
            "api": ctx.api,
            "operation": op.kind,
            "model": str(facts.get("model") or op.model),
            "served": outcome.served or op.model,
            "backend": op.backend,
            "upstream": _text(facts.get("upstream")),
            "stream": op.stream,
            "status": status_of(op, outcome),
            "error": error.code if error is not None else None,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "cached_tokens": usage.cached_tokens,
            "latency_us": int(outcome.latency_s * 1e6),
            "ttft_us": None if outcome.ttft_s is None else int(outcome.ttft_s * 1e6),
            "cache": outcome.cache,
            "redactions": {str(k): int(v) for k, v in redactions.items()} if redactions else {},
            "moderation": _text(facts.get("moderation")),
            "refused": _text(facts.get("refused")),
        }


def _key(op: Operation) -> str:
    """The context's fact that carries one operation's :class:`Watch`."""
    return f"audit:{id(op)}"


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


async def _settled(future: asyncio.Future[str] | None) -> None:
    if future is not None and not future.done():
        with contextlib.suppress(Exception):
            await asyncio.shield(future)
