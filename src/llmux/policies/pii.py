"""Personal data in text, found in process without a model: the recognisers that the
redaction policy masks, blocks or pseudonymises with.

Each recogniser is a pattern for the candidates plus a check that the candidate is what
it looks like, so that look-alikes stay untouched:

* ``phone``: mainland mobile numbers, ``1[3-9]`` and nine digits, with an optional
  ``+86`` / ``0086`` / ``86`` prefix and spaces or hyphens between the groups
  (``138 0013 8000``, ``+86-138-0013-8000``).
* ``id_card``: 18-digit resident identity numbers (GB 11643): a province code that
  exists, a real birth date, and the ISO 7064 MOD 11-2 check character (``X`` for 10).
* ``credit_code``: Unified Social Credit Codes (GB 32100): 18 characters of the code's
  alphabet and its MOD 31 check character. A code of digits only is judged as a number
  (an identity or a card number): one 18-digit number in 31 passes the check by chance.
* ``bank_card``: 16 to 19 digits (optionally in groups of four) that pass the Luhn check,
  or any such run right after a context word (卡号, 银行卡, card number, ...).
* ``email`` and ``ip`` (IPv4, and IPv6 as :mod:`ipaddress` reads it).
* operator patterns: named regular expressions from the settings.

Python's ``\\b`` sees no boundary between a digit and a Chinese character (both are word
characters), so numbers are bounded by digit look-arounds instead. Where matches
overlap, the stronger check wins (an identity number over a card number over a phone).
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

KINDS = ("id_card", "credit_code", "bank_card", "phone", "email", "ip")
# the longest tail of a text that can still grow into a match: what a stream holds back
HOLD_BACK = 24

# province codes of GB/T 2260 (the first two digits of a resident identity number)
PROVINCES = frozenset(
    str(code) for code in (11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41,
                           42, 43, 44, 45, 46, 50, 51, 52, 53, 54, 61, 62, 63, 64, 65, 71,
                           81, 82)
)  # fmt: skip
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"  # by the weighted sum mod 11
_USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # no I, O, S, V, Z
_USCC_VALUE = {c: i for i, c in enumerate(_USCC_ALPHABET)}
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
CARD_WORDS = ("卡号", "银行卡", "信用卡", "储蓄卡", "借记卡", "card number", "card no", "card")

_NUM = r"(?<![0-9A-Za-z])"  # not inside a longer number or code
_END = r"(?![0-9A-Za-z])"
_IPV4 = re.compile(r"(?<![0-9.])(?:\d{1,3}\.){3}\d{1,3}(?![0-9]|\.\d)")
_IPV6 = re.compile(r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Fa-f:])")
PATTERNS: dict[str, re.Pattern[str]] = {
    "id_card": re.compile(_NUM + r"\d{17}[\dXx]" + _END),
    "credit_code": re.compile(_NUM + r"[0-9A-HJ-NPQRTUWXY]{18}" + _END),
    "bank_card": re.compile(_NUM + r"(?:\d{4}[ -]?){3}\d{4}(?:[ -]?\d{1,3})?" + r"(?![0-9])"),
    "phone": re.compile(r"(?<![0-9+])(?:(?:\+|00)?86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}(?![0-9])"),
    "email": re.compile(
        r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})+"
    ),
    "ip": re.compile(f"{_IPV4.pattern}|{_IPV6.pattern}"),  # searched as its two halves
}


# found inside runs of digits, with at least this many digits
NUMBERS = {"id_card": 17, "bank_card": 16, "phone": 11}
_RUNS = re.compile(r"[0-9+][0-9 +.-]{6,}[0-9Xx]|[0-9]{1,3}(?:\.[0-9]{1,3}){3}")


@dataclass(frozen=True, slots=True)
class Found:
    kind: str
    start: int
    end: int
    text: str


def digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def id_card_valid(text: str, today: datetime.date | None = None) -> bool:
    """GB 11643: province, birth date (not in the future, not before 1900), check."""
    code = text.upper()
    if len(code) != 18 or not code[:17].isdigit() or code[:2] not in PROVINCES:
        return False
    try:
        born = datetime.date(int(code[6:10]), int(code[10:12]), int(code[12:14]))
    except ValueError:
        return False
    if not datetime.date(1900, 1, 1) <= born <= (today or datetime.date.today()):
        return False
    total = sum(int(c) * w for c, w in zip(code[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == code[17]


def credit_code_valid(text: str) -> bool:
    """GB 32100: the alphabet, a six-digit region code, and the MOD 31 check."""
    code = text.upper()
    if len(code) != 18 or any(c not in _USCC_VALUE for c in code) or not code[2:8].isdigit():
        return False
    total = sum(_USCC_VALUE[c] * w for c, w in zip(code[:17], _USCC_WEIGHTS, strict=True))
    return _USCC_ALPHABET[(31 - total % 31) % 31] == code[17]


def luhn_valid(number: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(number)):
        d = int(c)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def ip_valid(text: str) -> bool:
    colons = text.count(":")
    if colons and colons < 7 and "::" not in text:  # a time (10:31:07), not an address
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return ":" not in text or text.strip(":") != ""  # "::" alone is no one's address


Runs = list[tuple[re.Match[str], int]]


def _runs(text: str) -> Runs:
    """The runs of digits and separators in ``text``, each with its count of digits:
    where a number can be, found in one scan for all the number recognisers."""
    out = []
    for run in _RUNS.finditer(text):
        g = run.group()
        out.append((run, len(g) - g.count(" ") - g.count("-") - g.count(".") - g.count("+")))
    return out


def _near_card_word(text: str, start: int) -> bool:
    before = text[max(0, start - 12) : start].lower()
    return any(word in before for word in CARD_WORDS)


class Recognizers:
    """The recognisers for ``kinds`` (default: all built-in ones) plus ``patterns``
    (name -> regular expression, the operator's own). :meth:`find` lists the matches in
    text order, without overlaps."""

    def __init__(
        self, kinds: Iterable[str] = KINDS, patterns: Mapping[str, str] | None = None
    ) -> None:
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown PII kinds: {', '.join(sorted(unknown))}")
        self.kinds = tuple(k for k in KINDS if k in set(kinds))
        self.custom = {name: re.compile(rx) for name, rx in (patterns or {}).items()}
        self._checks: dict[str, Callable[[str, re.Match[str]], bool]] = {
            "id_card": lambda text, m: id_card_valid(m.group()),
            "credit_code": lambda text, m: (
                credit_code_valid(m.group()) and not m.group().isdigit()
            ),  # all digits: a number, judged as one
            "bank_card": lambda text, m: (
                16 <= len(digits(m.group())) <= 19
                and (luhn_valid(digits(m.group())) or _near_card_word(text, m.start()))
            ),
            "phone": lambda text, m: True,
            "email": lambda text, m: True,
            "ip": lambda text, m: ip_valid(m.group()),
        }

    def find(self, text: str) -> list[Found]:
        candidates: list[tuple[int, Found]] = []
        runs = _runs(text)
        for rank, kind in enumerate(self.kinds):
            check = self._checks[kind]
            for m in self._matches(kind, text, runs):
                if check(text, m):
                    candidates.append((rank, Found(kind, m.start(), m.end(), m.group())))
        for j, (name, rx) in enumerate(self.custom.items()):
            for m in rx.finditer(text):
                if m.end() > m.start():
                    candidates.append((len(KINDS) + j, Found(name, m.start(), m.end(), m.group())))
        taken: list[Found] = []
        for _, found in sorted(candidates, key=lambda c: (c[0], c[1].start)):
            if all(found.end <= t.start or found.start >= t.end for t in taken):
                taken.append(found)
        return sorted(taken, key=lambda f: f.start)

    def _matches(self, kind: str, text: str, runs: Runs) -> Iterable[re.Match[str]]:
        """The pattern's matches, searched only where they can be: a number's inside
        the runs of digits (one scan finds those), an email's only if there is an ``@``,
        an IPv6 address's only if there is a ``:``."""
        rx = PATTERNS[kind]
        if kind in NUMBERS:
            least = NUMBERS[kind]
            for run, count in runs:
                if count >= least:
                    yield from rx.finditer(text, run.start(), min(len(text), run.end() + 1))
        elif kind == "email":
            if "@" in text:
                yield from rx.finditer(text)
        elif kind == "ip":
            for run, _ in runs:
                if run.group().count(".") >= 3:
                    yield from _IPV4.finditer(text, run.start(), min(len(text), run.end() + 1))
            if ":" in text:
                yield from _IPV6.finditer(text)
        else:
            yield from rx.finditer(text)
