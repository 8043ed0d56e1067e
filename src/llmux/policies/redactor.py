"""The text side of PII redaction: what is found, what replaces it, and how a stream
is redacted as it goes.

* :class:`Redactor`: one configuration's recognisers (:mod:`llmux.policies.pii`), word
  lists and actions. :meth:`Redactor.scrub` masks every value in a text with its type's
  label (``[PHONE]``), for logs and stored history.
* :class:`Pseudonyms`: one operation's placeholders. The same value gets the same
  placeholder wherever it appears in the request (``[PHONE_1]``, ``[PHONE_2]``, ...);
  a value whose action is ``block`` is noted, and the request refused by the caller; a
  value whose action is ``pseudonymize`` is remembered, so that the reply's
  placeholders turn back into it.
* :class:`ReplyText`: one reply field (a choice's content or thinking) as it streams.
  It passes on at once everything but the tail that could still become a value or a
  placeholder (a run of digits, letters and ``@._%+-:[]`` that is not letters alone;
  an end that could still grow into a listed word), and redacts what it passes on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from llmux.policies.pii import HOLD_BACK, KINDS, Found, Recognizers
from llmux.policies.settings import Action, RedactionSettings
from llmux.policies.wordlist import WordList, read_words

DESCRIPTIONS = {
    "id_card": "a resident identity number",
    "credit_code": "a unified social credit code",
    "bank_card": "a bank card number",
    "phone": "a mobile phone number",
    "email": "an email address",
    "ip": "an IP address",
}
_JOIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-@:[]")
_PLACEHOLDER = re.compile(r"\[([A-Z][A-Z0-9_]*_[0-9]+)\]")


def label(kind: str) -> str:
    """The placeholder's name for an entity type: ``phone`` -> ``PHONE``."""
    return re.sub(r"[^A-Z0-9]+", "_", kind.upper()).strip("_") or "PII"


def describe(kind: str) -> str:
    return DESCRIPTIONS.get(kind, f"a value of the {kind!r} list")


class Redactor:
    """What one configuration finds and does; shared by every request it applies to."""

    def __init__(self, settings: RedactionSettings) -> None:
        self.settings = settings
        self.enabled = settings.enabled
        unknown = set(settings.kinds) - set(KINDS)
        if unknown:
            raise ValueError(
                f"[redaction] kinds: unknown {', '.join(sorted(unknown))}; known: "
                f"{', '.join(KINDS)}"
            )
        self.recognizers = Recognizers(settings.kinds, settings.patterns)
        lists: dict[str, list[str]] = {k: list(v) for k, v in settings.words.items()}
        for name, path in settings.word_files.items():
            lists.setdefault(name, []).extend(read_words(path))
        self.words = WordList(lists)
        self.actions: dict[str, Action] = dict(settings.actions)
        self.default: Action = settings.action
        self.replies = settings.replies
        self.hold = settings.hold_back
        # an operator's pattern may match anything: its matches are found whole if no
        # longer than this many characters
        self.keep = HOLD_BACK if settings.patterns else 0

    def action(self, kind: str) -> Action:
        return self.actions.get(kind, self.default)

    def find(self, text: str) -> list[Found]:
        """Every value whose action is not ``allow``, in text order, without overlaps
        (a recogniser's match wins over a word's)."""
        found = self.recognizers.find(text) if text else []
        if self.words and text:
            words = [Found(n, s, e, text[s:e]) for n, s, e in self.words.find(text)]
            found = _merge(found, words)
        return [f for f in found if self.action(f.kind) != "allow"]

    def scrub(self, text: str) -> str:
        """``text`` with every value replaced by its type's label, e.g. ``[PHONE]``."""
        if not self.enabled or not text:
            return text
        return _replace(text, self.find(text), lambda f: f"[{label(f.kind)}]")


def _merge(first: list[Found], second: list[Found]) -> list[Found]:
    out = list(first)
    for f in second:
        if all(f.end <= t.start or f.start >= t.end for t in first):
            out.append(f)
    return sorted(out, key=lambda f: f.start)


def _replace(text: str, found: Iterable[Found], by: Callable[[Found], str]) -> str:
    parts: list[str] = []
    pos = 0
    for f in found:
        parts.append(text[pos : f.start])
        parts.append(by(f))
        pos = f.end
    parts.append(text[pos:])
    return "".join(parts)


@dataclass(slots=True)
class Pseudonyms:
    """One operation's placeholders and what they stand for."""

    redactor: Redactor
    given: dict[tuple[str, str], str]
    counts: dict[str, int]
    originals: dict[str, str]  # placeholder -> value, for pseudonymised values
    blocked: list[str]  # entity types found whose action is block

    @classmethod
    def new(cls, redactor: Redactor) -> Pseudonyms:
        return cls(redactor, {}, {}, {}, [])

    def placeholder(self, found: Found, *, prompt: bool = True) -> str:
        """The value's placeholder. Only a value of the prompt is turned back later
        (when its type is pseudonymised); one the model wrote itself stays masked."""
        key = (found.kind, found.text)
        got = self.given.get(key)
        if got is None:
            n = self.counts[found.kind] = self.counts.get(found.kind, 0) + 1
            got = self.given[key] = f"[{label(found.kind)}_{n}]"
            if prompt and self.redactor.action(found.kind) == "pseudonymize":
                self.originals[got] = found.text
        return got

    def _reply_placeholder(self, found: Found) -> str:
        return self.placeholder(found, prompt=False)

    def redact(self, text: str) -> str:
        """A prompt's text: values replaced by placeholders; blocked types noted."""
        if not text:
            return text
        found = self.redactor.find(text)
        for f in found:
            if self.redactor.action(f.kind) == "block" and f.kind not in self.blocked:
                self.blocked.append(f.kind)
        return _replace(text, found, self.placeholder) if found else text

    def reply(self, text: str, found: list[Found] | None = None) -> str:
        """A reply's text: new values masked (when replies are redacted), then the
        pseudonymised placeholders turned back into their values."""
        if self.redactor.replies:
            if found is None:
                found = self.redactor.find(text)
            if found:
                text = _replace(text, found, self._reply_placeholder)
        return self.restore(text)

    def restore(self, text: str) -> str:
        if not self.originals or "[" not in text:
            return text
        return _PLACEHOLDER.sub(lambda m: self.originals.get(m.group(), m.group()), text)

    @property
    def streams_reply(self) -> bool:
        """Whether replies need to pass through :class:`ReplyText` at all."""
        return self.redactor.replies or bool(self.originals)


class ReplyText:
    """One streamed reply field: :meth:`feed` returns what may go out now, redacted;
    :meth:`flush` the rest, at the end."""

    def __init__(self, names: Pseudonyms) -> None:
        self.names = names
        self.buf = ""

    def feed(self, text: str) -> str:
        buf = self.buf + text
        found = self.names.redactor.find(buf) if self.names.redactor.replies else []
        cut = self._cut(buf)
        for f in found:
            if f.start < cut < f.end:
                cut = f.start
        if cut <= 0:
            self.buf = buf
            return ""
        self.buf = buf[cut:]
        return self.names.reply(buf[:cut], [f for f in found if f.end <= cut])

    def flush(self) -> str:
        buf, self.buf = self.buf, ""
        return self.names.reply(buf) if buf else ""

    def _cut(self, buf: str) -> int:
        """Where the tail that could still grow into a value, a placeholder or a listed
        word begins. A run of letters alone goes out: only an email address could grow
        from it, and the address is masked from its first character after the letters
        (an ``@``, a dot, a digit), so a reply that starts with a word starts at once."""
        n = len(buf)
        redactor = self.names.redactor
        low = max(0, n - redactor.hold)
        i = n
        while i > low and _joins(buf, i - 1):
            i -= 1
        if i == low and low > 0:  # a run longer than any value: keep only a number's worth
            return max(0, n - HOLD_BACK)
        if buf[i:].isalpha() and buf[i:].isascii():
            i = n
        keep = max(redactor.words.pending(buf), redactor.keep)
        if keep and n - keep < i:
            i = max(0, n - keep)
            while i > low and _joins(buf, i - 1) and _joins(buf, i):
                i -= 1
        return i


def _joins(buf: str, j: int) -> bool:
    c = buf[j]
    if c in _JOIN:
        return True
    # a space or hyphen inside a number ("138 0013 8000") or right after its digits
    return (
        c == " " and j > 0 and buf[j - 1].isdigit() and (j + 1 == len(buf) or buf[j + 1].isdigit())
    )
