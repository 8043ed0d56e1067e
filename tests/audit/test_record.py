"""The record's canonical form, the hash chain and the keyed hashes of prompts and
replies."""

from __future__ import annotations

import hashlib
import json

from llmux.audit.record import (
    GENESIS,
    AuditRecord,
    ReplyMac,
    canonical,
    iso_us,
    parse_iso_us,
    prompt_hash,
    sealed,
)
from llmux.auth.secrets import Keyring
from llmux.core.chunks import ChatChunk, EmbedResult

BODY = b'{"model":"m","messages":[{"role":"user","content":"\xe4\xbd\xa0\xe5\xa5\xbd"}]}'


def test_the_prompt_hash_is_keyed_by_the_server_secret() -> None:
    one = Keyring(b"s" * 32).audit
    other = Keyring(b"t" * 32).audit
    assert prompt_hash(one, BODY) == prompt_hash(one, bytes(BODY)), "same body, same hash"
    assert prompt_hash(one, BODY) != hashlib.sha256(BODY).hexdigest(), "not a plain digest"
    assert prompt_hash(one, BODY) != prompt_hash(other, BODY), "another server, another hash"
    assert prompt_hash(one, BODY) != prompt_hash(one, BODY + b" ")
    assert len(prompt_hash(one, BODY)) == 64
    assert one not in (Keyring(b"s" * 32).signing, Keyring(b"s" * 32).sessions), "its own key"


def test_the_reply_hash_covers_what_was_streamed() -> None:
    key = Keyring(b"s" * 32).audit
    a, b = ReplyMac(key), ReplyMac(key)
    for piece in ("Hel", "lo"):
        a.feed(ChatChunk(content=piece))
    a.feed(ChatChunk(done=True))
    b.feed(ChatChunk(content="Hello"))
    assert a.hexdigest() == b.hexdigest(), "the text, however it was cut"
    c = ReplyMac(key)
    c.feed(ChatChunk(content="Hellp"))
    assert c.hexdigest() != a.hexdigest()
    raw, vectors = ReplyMac(key), ReplyMac(key)
    raw.feed(b'{"done":true}\n')
    vectors.feed(EmbedResult("m", [[0.5, 1.0]], 1, 0, 0))
    assert len({raw.hexdigest(), vectors.hexdigest(), a.hexdigest()}) == 3


def test_times_keep_microseconds_in_utc() -> None:
    at = 1_796_000_000_123_456
    text = iso_us(at)
    assert text.endswith(".123456Z") and "T" in text
    assert parse_iso_us(text) == at
    assert parse_iso_us("2026-12-02T09:30:00+08:00") == parse_iso_us("2026-12-02T01:30:00Z")


def test_the_hash_is_sha256_of_the_canonical_form_and_links_the_chain() -> None:
    first = sealed(AuditRecord("r1", 1, GENESIS, iso_us(10**15), "model", "q1", model="模型"))
    body = first.canonical()
    assert body == json.dumps(first.body(), sort_keys=True, separators=(",", ":"),
                              ensure_ascii=False).encode()  # fmt: skip
    assert "模型".encode() in body and b" " not in body
    assert b'"hash"' not in body, "the hash is not over itself"
    assert first.hash == hashlib.sha256(body).hexdigest()
    second = sealed(AuditRecord("r1", 2, first.hash, iso_us(10**15 + 1), "model", "q2"))
    assert second.prev_hash == first.hash
    line = json.loads(second.line())
    assert line["hash"] == second.hash and AuditRecord.from_json(line) == second
    edited = AuditRecord.from_json({**line, "status": 500})
    assert edited.digest() != second.hash, "any change shows"
    assert canonical({"b": 1, "a": None}) == b'{"a":null,"b":1}'
