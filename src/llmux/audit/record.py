"""One audit record, its canonical form and the hash chain.

A record is a flat set of fields (:class:`AuditRecord`). Its **canonical form** is the
UTF-8 of its JSON with sorted keys, no spaces and non-ASCII characters as themselves
(``json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False)``), every
field but ``hash``; times are an ISO 8601 string in UTC with microseconds and integer
microseconds, so no float is ever hashed. Its ``hash`` is the SHA-256 of that form in
hex. Each replica numbers its records ``seq`` = 1, 2, 3, ... and each record carries
``prev_hash``, the hash of the replica's record before it (:data:`GENESIS` for the
first): an edited record no longer matches its hash, a removed one leaves a gap in
``seq``, and a record put in its place breaks the next one's link.

The prompt and response hashes are HMAC-SHA256 under the server's audit key (derived
from the server secret, ``Keyring.audit``), so a hash cannot be tested against a
dictionary of likely prompts by anyone without the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from array import array
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal

from llmux.core.chunks import ChatChunk, EmbedResult
from llmux.core.request import ChatRequest, EmbedRequest

GENESIS = "0" * 64  # prev_hash of a replica's first record
VERSION = 1
Kind = Literal["model", "admin"]


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def iso_us(epoch_us: int) -> str:
    """``2026-12-02T09:30:00.123456Z``: UTC, always six digits."""
    seconds, micros = divmod(epoch_us, 1_000_000)
    return f"{_second(seconds)}.{micros:06d}Z"


@lru_cache(maxsize=4)
def _second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def parse_iso_us(text: str) -> int:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    delta = parsed - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One model call or administrative action. ``ts`` is when the record was made
    (the operation's end; ``latency_us`` before it, it began)."""

    replica: str
    seq: int
    prev_hash: str
    ts: str
    kind: Kind
    request_id: str
    client_ip: str | None = None
    principal_kind: str = "anonymous"
    principal_id: str | None = None
    principal_name: str = "anonymous"
    principal_user: str | None = None  # the user a key or client acts for
    method: str = "POST"
    route: str = ""  # the path of a model call; the route template of an admin action
    api: str = ""
    operation: str = ""  # chat, embed; an admin action: its route's method and template
    model: str | None = None  # as the client asked for it
    served: str | None = None  # the model that answered, as the backend named it
    backend: str | None = None  # local, pool, relay
    upstream: str | None = None  # the upstream member that answered
    stream: bool = False
    prompt_hash: str | None = None
    response_hash: str | None = None
    status: int = 200  # the HTTP status the client got; 499: it went away first
    error: str | None = None  # the error's code
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    latency_us: int = 0
    ttft_us: int | None = None
    cache: str | None = None  # l1, l2, semantic: the response cache answered
    redactions: dict[str, int] = field(default_factory=dict)  # entity type -> count
    moderation: str | None = None  # the moderation verdict
    refused: str | None = None  # why quotas refused it (rate limited, budget)
    target: dict[str, str] = field(default_factory=dict)  # an admin action's path params
    v: int = VERSION
    hash: str = ""

    def body(self) -> dict[str, Any]:
        """Every field but ``hash``: what the hash is over."""
        return {name: getattr(self, name) for name in _BODY}

    def canonical(self) -> bytes:
        return canonical(self.body())

    def digest(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()

    @property
    def time_us(self) -> int:
        return parse_iso_us(self.ts)

    @property
    def principal(self) -> str:
        """``kind:id`` (``anonymous`` without an id), as the table's column has it."""
        return f"{self.principal_kind}:{self.principal_id}" if self.principal_id else "anonymous"

    def line(self) -> bytes:
        """The spool's line: the canonical form with ``hash`` as its last key."""
        return encode(self.body())[2]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AuditRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


_BODY = tuple(f.name for f in fields(AuditRecord) if f.name != "hash")
NAMES = frozenset(_BODY)
# every field's default, in the canonical (sorted) order: a record's body is this
# updated with what is known, so its dict is already in key order for the encoder
TEMPLATE: dict[str, Any] = {
    f.name: f.default_factory() if f.default_factory is not MISSING else f.default
    for f in sorted(fields(AuditRecord), key=lambda f: f.name)
    if f.name != "hash"
}
_HASH_KEY = b',"hash":"'
_SUFFIX = len(_HASH_KEY) + 64 + 2  # ,"hash":"<64 hex>"}


def encode(body: dict[str, Any]) -> tuple[bytes, str, bytes]:
    """(the canonical form, its hash, the spool line): one pass of the JSON encoder."""
    form = canonical(body)
    digest = hashlib.sha256(form).hexdigest()
    return form, digest, form[:-1] + _HASH_KEY + digest.encode() + b'"}\n'


def split_line(line: bytes) -> tuple[bytes, str]:
    """A spool line's canonical form and hash (a ValueError when it is not one)."""
    line = line.rstrip(b"\n")
    if len(line) <= _SUFFIX or line[-_SUFFIX:][: len(_HASH_KEY)] != _HASH_KEY:
        raise ValueError("not a spool line")
    return line[:-_SUFFIX] + b"}", line[-_SUFFIX + len(_HASH_KEY) : -2].decode()


def sealed(record: AuditRecord) -> AuditRecord:
    """``record`` with its hash."""
    return replace(record, hash=record.digest())


# -- keyed hashes of prompts and replies --------------------------------------------------


class ReplyMac:
    """The HMAC of a reply, fed with each item as it streams: a chat chunk's thinking,
    content and tool calls (as JSON), an embedding result's vectors (float32), or the
    relayed bytes. Text is gathered and hashed once at the end (one HMAC update per
    reply, not per token)."""

    __slots__ = ("_key", "_parts")

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._parts: list[str | bytes] = []

    def feed(self, item: Any) -> None:
        if type(item) is ChatChunk:
            if item.content:
                self._parts.append(item.content)
            if item.thinking or item.tool_calls:
                self._rare(item)
        elif isinstance(item, bytes | bytearray):
            self._parts.append(bytes(item))
        elif isinstance(item, EmbedResult):
            for vector in item.embeddings:
                self._parts.append(array("f", vector).tobytes())
        elif isinstance(item, ChatChunk):
            self._rare(item)
            if item.content:
                self._parts.append(item.content)

    def _rare(self, item: ChatChunk) -> None:
        if item.thinking:
            self._parts.append(item.thinking)
        if item.tool_calls:
            self._parts.append(canonical([asdict(t) for t in item.tool_calls]))

    def hexdigest(self) -> str:
        parts = self._parts
        if all(type(p) is str for p in parts):
            data = "".join(parts).encode()  # type: ignore[arg-type]
        else:
            data = b"".join(p.encode() if isinstance(p, str) else p for p in parts)
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()


def prompt_hash(key: bytes, body: bytes) -> str:
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def requests_form(requests: tuple[ChatRequest, ...], embed: EmbedRequest | None) -> bytes:
    """What a prompt hash is over when there is no request body (a request-free caller:
    the conversations API over a WebSocket, a judge): the canonical JSON of the
    messages, prompts and inputs."""
    if embed is not None:
        return canonical({"input": list(embed.inputs)})
    return canonical(
        [
            {
                "messages": [{"role": m.role, "content": m.content} for m in r.messages],
                "prompt": r.prompt,
                "suffix": r.suffix,
            }
            for r in requests
        ]
    )
