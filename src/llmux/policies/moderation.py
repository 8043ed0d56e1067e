"""Moderation: text checked against categories, before generation and as replies stream.

The seam is :class:`Moderator`: ``check(text) -> Verdict``, with the categories a text
falls in, and ``classify``, which may also ask a judge model (:mod:`llmux.policies.
judge`). :class:`ListModerator` is the built-in one: per category, the operator's words
and phrases (Chinese or English, matched in one pass by :class:`~llmux.policies.
wordlist.WordList`) and regular expressions. ``POST /v1/moderations`` answers with it in
OpenAI's shape: the 13 category names OpenAI uses are always present, an operator's own
categories are added to them.

The :class:`Moderation` policy refuses a flagged prompt (400 ``content_filter``, naming
the category) and watches replies: each reply field is checked over a window of its
latest text (``[moderation] window`` characters before the new piece, so a word split
across chunks is seen whole), and the tail that could still grow into a listed word is
held back, so a listed word never reaches the client. A flagged reply ends at once: its
final chunk has ``done_reason`` ``content_filter``, and a stream then ends with an error
event. Like redaction, it fails closed.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar

from llmux.core.chunks import ChatChunk
from llmux.core.context import Principal, RequestContext
from llmux.core.request import ChatRequest
from llmux.errors import ContentRefused, LlmuxError, PolicyFailed
from llmux.policies import Handler, Operation, PassThrough
from llmux.policies.judge import JUDGE_ROUTE, Judge
from llmux.policies.settings import Built, ModerationSettings
from llmux.policies.wordlist import WordList, read_words

log = logging.getLogger(__name__)
T = TypeVar("T")

CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
FAILED = (
    "the moderation check failed, so the request was not served; the server log has the details"
)


@dataclass(frozen=True, slots=True)
class Verdict:
    categories: frozenset[str] = frozenset()  # the categories the text falls in

    @property
    def flagged(self) -> bool:
        return bool(self.categories)

    def first(self) -> str:
        return min(self.categories)


class Moderator(Protocol):
    """What moderates: ``check`` is fast enough for every streamed piece; ``classify``
    may also ask a model (:mod:`llmux.policies.judge`)."""

    def check(self, text: str) -> Verdict: ...

    async def classify(self, ctx: RequestContext, text: str) -> Verdict: ...


class ListModerator:
    """Words and patterns per category, from the settings."""

    def __init__(self, settings: ModerationSettings) -> None:
        lists: dict[str, list[str]] = {k: list(v) for k, v in settings.words.items()}
        for name, paths in settings.word_files.items():
            for path in paths:
                lists.setdefault(name, []).extend(read_words(path))
        self.words = WordList(lists)
        self.patterns = [
            (name, re.compile(rx)) for name, rxs in settings.patterns.items() for rx in rxs
        ]
        self.categories = tuple(dict.fromkeys((*CATEGORIES, *lists, *settings.patterns)))
        self.judge: Judge | None = None
        if settings.judge_model:
            asked = tuple(settings.judge_categories) or self.categories
            self.judge = Judge(
                settings.judge_model, settings.judge_prompt, asked, settings.judge_max_chars
            )
            self.categories = tuple(dict.fromkeys((*self.categories, *asked)))

    def __bool__(self) -> bool:
        return bool(self.words) or bool(self.patterns) or self.judge is not None

    async def classify(self, ctx: RequestContext, text: str) -> Verdict:
        """The lists' verdict, and the judge's when the lists find nothing."""
        verdict = _guarded(partial(self.check, text))
        if verdict.flagged or self.judge is None or not text.strip():
            return verdict
        return Verdict(await self.judge.check(ctx, text))

    def check(self, text: str, window: str | None = None) -> Verdict:
        """The categories of ``text``; the patterns search ``window`` instead when one
        is given (a reply's recent text: words are never longer than their list's
        longest, patterns may be)."""
        if not text:
            return Verdict()
        hit = {name for name, _, _ in self.words.find(text)}
        where = text if window is None else window
        hit.update(name for name, rx in self.patterns if name not in hit and rx.search(where))
        return Verdict(frozenset(hit))


def request_texts(request: ChatRequest) -> Iterable[str]:
    for m in request.messages:
        yield m.content
        yield m.thinking
        for call in m.tool_calls:
            yield from _strings(call.arguments)
    for text in (request.prompt, request.suffix, request.prefix):
        if text:
            yield text


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


class Moderation(PassThrough):
    needs_body = True

    def __init__(self, settings: ModerationSettings) -> None:
        self.built = Built(settings, ListModerator)

    @property
    def any_enabled(self) -> bool:
        return any(s.enabled for s, _ in self.built.all())

    def bind(self, chat: Any) -> None:
        """Give the judges (if any) the gateway's ``chat``."""
        for _, moderator in self.built.all():
            if moderator.judge is not None:
                moderator.judge.bind(chat)

    def settings(self, principal: Principal) -> tuple[ModerationSettings, ListModerator]:
        return self.built.of(principal)

    def __call__(self, ctx: RequestContext, op: Operation, next: Handler) -> AsyncIterator[Any]:
        settings, moderator = self.settings(ctx.principal)
        if not settings.enabled or not moderator or not op.has_body or ctx.route == JUDGE_ROUTE:
            return next(ctx, op)
        return self._run(ctx, op, next, settings, moderator)

    async def _run(
        self,
        ctx: RequestContext,
        op: Operation,
        next: Handler,
        settings: ModerationSettings,
        moderator: ListModerator,
    ) -> AsyncIterator[Any]:
        if settings.prompts:
            verdict = await _check_prompt(ctx, op, moderator)
            ctx.facts["moderation"] = "flagged" if verdict.flagged else "allowed"
            if verdict.flagged:
                raise ContentRefused(
                    f"the request was refused by moderation (category {verdict.first()!r}); "
                    "change the text and send it again",
                    param=verdict.first(),
                )
        items = next(ctx, op)
        if op.kind != "chat" or not settings.replies:
            async for item in items:
                yield item
            return
        watch = ReplyWatch(moderator, settings.window)
        async for item in items:
            if not isinstance(item, ChatChunk):
                yield item
                continue
            out, verdict = _guarded(partial(watch.see, item))
            for chunk in out:
                yield chunk
            if verdict.flagged:
                ctx.facts["moderation"] = "flagged"
                await _close(items)
                yield ChatChunk(done=True, done_reason="content_filter", model=item.model)
                if op.stream:
                    raise ContentRefused(
                        f"the reply was stopped by moderation (category {verdict.first()!r})",
                        param=verdict.first(),
                    )
                return


async def _check_prompt(ctx: RequestContext, op: Operation, moderator: ListModerator) -> Verdict:
    """The lists' verdict on each text of the request; then, if they find nothing, the
    judge's on the texts together (one question per request)."""
    texts = (
        list(op.embed.inputs)
        if op.embed is not None
        else [t for r in op.requests for t in request_texts(r) if t]
    )
    for text in texts:
        verdict = _guarded(partial(moderator.check, text))
        if verdict.flagged:
            return verdict
    if moderator.judge is None or not texts:
        return Verdict()
    return Verdict(await moderator.judge.check(ctx, "\n\n".join(texts)))


def _guarded(check: Callable[[], T]) -> T:
    try:
        return check()
    except LlmuxError:
        raise
    except Exception:
        log.exception("moderation failed")
        raise PolicyFailed(FAILED) from None


async def _close(items: AsyncIterator[Any]) -> None:
    close = getattr(items, "aclose", None)
    if close is not None:
        await close()  # the backend stops generating


class ReplyWatch:
    """The reply fields of one operation as they stream: each new piece is checked
    with the ``window`` characters before it, and the last characters that could still
    still grow into a listed word wait for the next piece."""

    def __init__(self, moderator: ListModerator, window: int) -> None:
        self.moderator = moderator
        self.window = window
        self.seen: dict[tuple[int, str], str] = {}  # the last window of text passed on
        self.held: dict[tuple[int, str], str] = {}

    def see(self, chunk: ChatChunk) -> tuple[list[ChatChunk], Verdict]:
        if chunk.done:
            content = self._field(chunk.index, "content", chunk.content, end=True)
            thinking = self._field(chunk.index, "thinking", chunk.thinking, end=True)
        else:
            content = self._field(chunk.index, "content", chunk.content)
            thinking = self._field(chunk.index, "thinking", chunk.thinking)
        calls = " ".join(s for c in chunk.tool_calls for s in _strings(c.arguments))
        verdict = self._verdict(content, thinking, self.moderator.check(calls))
        if verdict.flagged:
            return [], verdict
        text, reasoning = content[0], thinking[0]
        if chunk.done:
            out = []
            if text or reasoning:
                out.append(
                    ChatChunk(
                        content=text, thinking=reasoning, model=chunk.model, index=chunk.index
                    )
                )
            return [*out, dataclasses.replace(chunk, content="", thinking="")], verdict
        if (chunk.content or chunk.thinking) and not (text or reasoning or chunk.tool_calls):
            return [], verdict
        return [dataclasses.replace(chunk, content=text, thinking=reasoning)], verdict

    @staticmethod
    def _verdict(*results: tuple[str, Verdict] | Verdict) -> Verdict:
        found: set[str] = set()
        for r in results:
            v = r[1] if isinstance(r, tuple) else r
            found |= v.categories
        return Verdict(frozenset(found))

    def _field(self, index: int, name: str, text: str, end: bool = False) -> tuple[str, Verdict]:
        """What of the field may go out now, and the verdict on it in its window."""
        key = (index, name)
        held = self.held.get(key, "") + text
        if not held:
            return "", Verdict()
        seen = self.seen.get(key, "")
        recent = (
            seen[max(0, len(seen) - self.moderator.words.longest) :] if self.moderator.words else ""
        )
        verdict = self.moderator.check(recent + held, seen + held)
        cut = len(held) if end else len(held) - self.moderator.words.pending(seen + held)
        cut = max(0, cut)
        out = held[:cut]
        self.held[key] = held[cut:]
        self.seen[key] = (seen + out)[-self.window :]
        return out, verdict
