"""The PII redaction policy: prompts are redacted before any backend sees them, and
replies on their way back.

Per operation, every text of the request (messages, their reasoning and tool-call
arguments, a raw prompt, a suffix, a prefix, embedding inputs) passes through one
:class:`~llmux.policies.redactor.Pseudonyms`: a value whose action is ``mask`` or
``pseudonymize`` becomes a placeholder (``[PHONE_1]``), and one whose action is
``block`` refuses the request (400 ``pii_detected``, naming the type, never the value).
The reply streams through :class:`~llmux.policies.redactor.ReplyText` per choice and
field: values the model writes are masked, pseudonymised placeholders turn back into
the caller's values, and only the tail that could still become either is held back.

The policy fails closed: if redacting raises, the request is refused (503
``policy_failed``) or the stream ends with that error, so unredacted text never passes.
:meth:`Redaction.scrubber` gives conversation history and :class:`ScrubLogs` gives
log records the same recognisers.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from llmux.core.chunks import ChatChunk
from llmux.core.context import Principal, RequestContext
from llmux.core.request import ChatRequest, ToolCall
from llmux.errors import ContentRefused, LlmuxError, PolicyFailed
from llmux.observability.logs import FIELDS, fields_of
from llmux.policies import Handler, Operation, PassThrough
from llmux.policies.redactor import Pseudonyms, Redactor, ReplyText, describe
from llmux.policies.settings import Built, RedactionSettings

log = logging.getLogger(__name__)
FAILED = "the PII redactor failed, so the request was not sent; the server log has the details"
WITHHELD = "(a log line was withheld: the PII redactor failed on it)"


class Redaction(PassThrough):
    needs_body = True

    def __init__(self, settings: RedactionSettings) -> None:
        self.built = Built(settings, Redactor)

    @property
    def base(self) -> Redactor:
        """The defaults' redactor (what log lines pass through)."""
        return self.built.all()[0][1]

    @property
    def any_enabled(self) -> bool:
        return any(r.enabled for _, r in self.built.all())

    def redactor(self, principal: Principal) -> Redactor:
        return self.built.of(principal)[1]

    def scrubber(self, ctx: RequestContext) -> Callable[[str], str] | None:
        """What stored history passes through for this caller, or None."""
        r = self.redactor(ctx.principal)
        return r.scrub if r.enabled and r.settings.history else None

    def __call__(self, ctx: RequestContext, op: Operation, next: Handler) -> AsyncIterator[Any]:
        redactor = self.redactor(ctx.principal)
        if not redactor.enabled or not op.has_body:
            return next(ctx, op)
        return self._run(ctx, op, next, redactor)

    async def _run(
        self, ctx: RequestContext, op: Operation, next: Handler, redactor: Redactor
    ) -> AsyncIterator[Any]:
        names = Pseudonyms.new(redactor)
        ctx.facts["redactions"] = names.counts  # entity type -> values masked, so far
        try:
            op = redact_operation(op, names)
        except LlmuxError:
            raise
        except Exception:
            log.exception("redacting a request failed")
            raise PolicyFailed(FAILED) from None
        if names.blocked:
            kind = names.blocked[0]
            raise ContentRefused(
                f"the request contains {describe(kind)} ({kind}), which this server does "
                "not accept; remove it and send the request again",
                code="pii_detected",
                param=kind,
            )
        items = next(ctx, op)
        if op.kind != "chat" or not names.streams_reply:
            async for item in items:
                yield item
            return
        async for item in _replies(items, names):
            yield item


def redact_operation(op: Operation, names: Pseudonyms) -> Operation:
    if op.embed is not None:
        inputs = tuple(names.redact(t) for t in op.embed.inputs)
        names.originals.clear()  # an embedding has no reply to turn them back in
        return dataclasses.replace(op, embed=dataclasses.replace(op.embed, inputs=inputs))
    return dataclasses.replace(op, requests=tuple(redact_request(r, names) for r in op.requests))


def redact_request(request: ChatRequest, names: Pseudonyms) -> ChatRequest:
    r = names.redact
    messages = tuple(
        dataclasses.replace(
            m,
            content=r(m.content),
            thinking=r(m.thinking),
            tool_calls=tuple(_tool_call(c, r) for c in m.tool_calls),
        )
        for m in request.messages
    )
    return dataclasses.replace(
        request,
        messages=messages,
        prompt=None if request.prompt is None else r(request.prompt),
        suffix=None if request.suffix is None else r(request.suffix),
        prefix=None if request.prefix is None else r(request.prefix),
    )


def _tool_call(call: ToolCall, f: Callable[[str], str]) -> ToolCall:
    return dataclasses.replace(call, arguments=_strings(call.arguments, f))


def _strings(value: Any, f: Callable[[str], str]) -> Any:
    """``value`` (JSON-like) with ``f`` applied to every string in it."""
    if isinstance(value, str):
        return f(value)
    if isinstance(value, dict):
        return {k: _strings(v, f) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_strings(v, f) for v in value)
    return value


async def _replies(items: AsyncIterator[Any], names: Pseudonyms) -> AsyncIterator[Any]:
    """The reply chunks with their text redacted as it streams (fail closed)."""
    texts: dict[tuple[int, str], ReplyText] = {}

    def field(index: int, name: str) -> ReplyText:
        got = texts.get((index, name))
        if got is None:
            got = texts[(index, name)] = ReplyText(names)
        return got

    async for item in items:
        if not isinstance(item, ChatChunk):
            yield item
            continue
        try:
            out = _chunk(item, names, field)
        except Exception:
            log.exception("redacting a reply failed")
            raise PolicyFailed(FAILED) from None
        for chunk in out:
            yield chunk


def _chunk(
    chunk: ChatChunk, names: Pseudonyms, field: Callable[[int, str], ReplyText]
) -> list[ChatChunk]:
    i = chunk.index
    calls = tuple(_tool_call(c, names.reply) for c in chunk.tool_calls)
    if not chunk.done:
        content = field(i, "content").feed(chunk.content) if chunk.content else ""
        thinking = field(i, "thinking").feed(chunk.thinking) if chunk.thinking else ""
        had = chunk.content or chunk.thinking or chunk.tool_calls
        if had and not (content or thinking or calls or chunk.logprobs):
            return []  # all of it held back for now
        return [dataclasses.replace(chunk, content=content, thinking=thinking, tool_calls=calls)]
    text, reasoning = field(i, "content"), field(i, "thinking")
    rest_content = text.feed(chunk.content) + text.flush()
    rest_thinking = reasoning.feed(chunk.thinking) + reasoning.flush()
    out = []
    if rest_content or rest_thinking:
        out.append(
            ChatChunk(content=rest_content, thinking=rest_thinking, model=chunk.model, index=i)
        )
    out.append(dataclasses.replace(chunk, content="", thinking="", tool_calls=calls))
    return out


class ScrubLogs(logging.Filter):
    """A handler filter that masks personal data in every record's message (and drops
    its arguments, which the message now holds) and in the text of its fields (the
    request lines' ``extra``, :data:`~llmux.observability.logs.FIELDS`). It fails
    closed: if the redactor raises, the record's text is withheld, and the logging call
    that made it still returns (a filter's exception would reach the caller)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__("llmux.redaction")
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # cannot be formatted: logging reports it
            return True
        try:
            self._scrub(record, message)
        except Exception:  # noqa: BLE001 (logging it here would recurse)
            record.msg, record.args = WITHHELD, None
            setattr(record, FIELDS, {})
        return True

    def _scrub(self, record: logging.LogRecord, message: str) -> None:
        scrub = self.redactor.scrub
        scrubbed = scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        fields = fields_of(record)
        if fields:
            setattr(record, FIELDS, {
                k: scrub(v) if isinstance(v, str) else v for k, v in fields.items()
            })  # fmt: skip
