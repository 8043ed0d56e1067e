"""Many words found in one pass: the lists that redaction and moderation match.

:class:`WordList` takes named lists of words or phrases and finds every occurrence in a
text, case-insensitively. A word made of ASCII letters and digits
matches only as a whole word ("ass" is not found in "class"); a word with Chinese (or
other non-ASCII) characters matches anywhere, since such text has no spaces.

The matcher is an Aho-Corasick automaton from ``pyahocorasick`` (``pip install
'llmux[guardrails]'``): its cost grows with the text, not with the number of words.
Without that package a regular expression of the words does the same, which is fine
for lists of a few hundred words.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
BIG_LIST = 500  # words past which a missing pyahocorasick is worth a warning
MAX_WORD = 256  # longer lines in a word file are not words


def fold(text: str) -> str:
    """``text`` in lower case, one character for one (so offsets stay): ``str.lower``
    where it keeps the length (nearly always), else ASCII letters alone."""
    lowered = text.lower()
    return lowered if len(lowered) == len(text) else text.translate(FOLD)


def _ascii_word(c: str) -> bool:
    return c.isascii() and c.isalnum()


def read_words(path: Path) -> list[str]:
    """One word or phrase a line; blank lines and lines starting with ``#`` are skipped."""
    text = path.expanduser().read_text(encoding="utf-8")
    words = [line.strip() for line in text.splitlines()]
    return [w for w in words if w and not w.startswith("#") and len(w) <= MAX_WORD]


class WordList:
    """Named lists of words; :meth:`find` yields ``(name, start, end)`` in text order
    (the longest word where several end at the same place)."""

    def __init__(self, lists: Mapping[str, Iterable[str]]) -> None:
        self.words: dict[str, str] = {}  # folded word -> the list's name
        for name, words in lists.items():
            for word in words:
                folded = fold(word.strip())
                if folded:
                    self.words.setdefault(folded, name)
        # every prefix of every word: what the end of a stream may still be the start of
        self.prefixes = frozenset(w[:k] for w in self.words for k in range(1, len(w) + 1))
        self.longest = max((len(w) for w in self.words), default=0)
        self._automaton: Any = None
        self._regex: re.Pattern[str] | None = None
        if not self.words:
            return
        try:
            import ahocorasick
        except ImportError:
            if len(self.words) > BIG_LIST:
                log.warning(
                    "%d words are matched by a regular expression; install "
                    "'llmux[guardrails]' (pyahocorasick) to match them in one pass",
                    len(self.words),
                )
            alternatives = sorted(self.words, key=len, reverse=True)
            self._regex = re.compile("|".join(re.escape(w) for w in alternatives))
            return
        automaton = ahocorasick.Automaton()
        for word in self.words:
            automaton.add_word(word, len(word))
        automaton.make_automaton()
        self._automaton = automaton

    def __bool__(self) -> bool:
        return bool(self.words)

    def pending(self, text: str) -> int:
        """The length of the longest end of ``text`` that could still grow into a
        listed word (a word that ends there whole counts too: an ASCII word might go on
        into a longer one); 0 when none could."""
        if not self.words:
            return 0
        tail = fold(text[-self.longest :])
        for k in range(len(tail), 0, -1):
            if tail[-k:] in self.prefixes:
                return k
        return 0

    def find(self, text: str) -> list[tuple[str, int, int]]:
        if not self.words:
            return []
        folded = fold(text)
        found = []
        for start, end in self._spans(folded):
            word = folded[start:end]
            if _ascii_word(word[0]) and start > 0 and _ascii_word(folded[start - 1]):
                continue
            if _ascii_word(word[-1]) and end < len(folded) and _ascii_word(folded[end]):
                continue
            found.append((self.words[word], start, end))
        return _no_overlaps(found)

    def _spans(self, folded: str) -> Iterator[tuple[int, int]]:
        if self._automaton is not None:
            for last, length in self._automaton.iter(folded):
                yield last + 1 - length, last + 1
        elif self._regex is not None:
            pos = 0
            while (m := self._regex.search(folded, pos)) is not None:
                yield m.start(), m.end()
                pos = m.start() + 1  # overlapping: "ab" and "b" in "ab"


def _no_overlaps(found: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """Earliest start first, the longest of those; the rest of an overlap is dropped."""
    found.sort(key=lambda f: (f[1], f[1] - f[2]))
    out: list[tuple[str, int, int]] = []
    for item in found:
        if not out or item[1] >= out[-1][2]:
            out.append(item)
    return out
