"""Where the response cache keeps replies: an in-process LRU bounded by bytes (L1) and
Redis (L2), each entry the reply's core chunks (:class:`Entry`).

An entry is encoded as compact JSON (:func:`encode`, :func:`decode`): a version, the
time it was made, and the chunks with only their non-default fields. Its encoded length
is its size, for the LRU's bound and ``max_entry_bytes``. :class:`Recorder` makes an
entry's chunks of a reply as it streams, :func:`replayed` the chunks of a hit. Redis
failures never reach the caller: a read that fails is a miss, a write that fails is
dropped, both are logged (at most once a minute, never with a key's content), and after
a failure Redis is left alone for :data:`PAUSE_S`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from llmux.core.chunks import ChatChunk, Metrics, TokenLogprob
from llmux.core.request import ToolCall

log = logging.getLogger(__name__)
FORMAT = 1  # the encoding's version: an entry of another version is a miss
PAUSE_S = 5.0  # after a Redis failure, this long without asking it
MAX_WRITES = 256  # Redis writes in flight; past that new entries stay in memory only
TIMEOUT_S = 0.5  # a Redis connect, read or wait for a connection past this is a failure
PIECE_CHARS = 256  # stored content pieces are coalesced up to this length
NOT_STORED = frozenset({"load", "unload"})  # replies never stored

_METRICS = tuple(f for f in Metrics.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class Entry:
    """A stored reply: its chunks (content pieces coalesced), when it was made, and its
    encoded form (what Redis holds; its length is the entry's size)."""

    chunks: tuple[ChatChunk, ...]
    created: float
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


def make_entry(chunks: tuple[ChatChunk, ...], created: float) -> Entry:
    body = {"v": FORMAT, "at": created, "c": [_chunk_obj(c) for c in chunks]}
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return Entry(chunks, created, data)


def decode(data: bytes) -> Entry | None:
    """The entry ``data`` holds, or None when it is of another version or unreadable."""
    try:
        body = json.loads(data)
        if body.get("v") != FORMAT:
            return None
        chunks = tuple(_chunk(obj) for obj in body["c"])
        return Entry(chunks, float(body["at"]), data)
    except (ValueError, TypeError, KeyError, IndexError):
        return None


def _chunk_obj(c: ChatChunk) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    if c.content:
        obj["c"] = c.content
    if c.thinking:
        obj["t"] = c.thinking
    if c.tool_calls:
        obj["tc"] = [[t.name, t.arguments, t.id, t.index] for t in c.tool_calls]
    if c.done:
        obj["d"] = 1
    if c.done_reason is not None:
        obj["r"] = c.done_reason
    if c.metrics is not None:
        obj["m"] = [getattr(c.metrics, f) for f in _METRICS]
    if c.context is not None:
        obj["x"] = list(c.context)
    if c.model:
        obj["mo"] = c.model
    if c.index:
        obj["i"] = c.index
    if c.logprobs:
        obj["lp"] = [[p.token, p.logprob, list(p.bytes), p.top] for p in c.logprobs]
    return obj


def _chunk(obj: dict[str, Any]) -> ChatChunk:
    metrics = obj.get("m")
    context = obj.get("x")
    return ChatChunk(
        content=str(obj.get("c", "")),
        thinking=str(obj.get("t", "")),
        tool_calls=tuple(ToolCall(n, a, i, x) for n, a, i, x in obj.get("tc", ())),
        done=bool(obj.get("d")),
        done_reason=obj.get("r"),
        metrics=Metrics(*metrics) if metrics is not None else None,
        context=tuple(context) if context is not None else None,
        model=str(obj.get("mo", "")),
        index=int(obj.get("i", 0)),
        logprobs=tuple(_logprob(p) for p in obj.get("lp", ())),
    )


def _logprob(p: list[Any]) -> TokenLogprob:
    token, logprob, raw, top = p
    alternatives = tuple((t, v, tuple(b)) for t, v, b in top)
    return TokenLogprob(token, logprob, tuple(raw), alternatives)


class Recorder:
    """The chunks of a reply as they stream, content pieces coalesced (a run of pieces
    is joined into one chunk when it ends), and whether it ended as one that may be
    stored."""

    def __init__(self, choices: int) -> None:
        self.choices = choices
        self._chunks: list[ChatChunk] = []
        self._run: list[ChatChunk] = []
        self._run_chars = 0
        self.finals = 0
        self.storable = True

    def see(self, item: Any) -> None:
        if not isinstance(item, ChatChunk):
            self.storable = False
            return
        if item.done:
            self.finals += 1
            if item.done_reason in NOT_STORED:
                self.storable = False
        run = self._run
        if run and not (self._run_chars < PIECE_CHARS and _joinable(run[-1], item)):
            self._end_run()
        run.append(item)
        self._run_chars += len(item.content) + len(item.thinking)

    def _end_run(self) -> None:
        run = self._run
        if len(run) == 1:
            self._chunks.append(run[0])
        elif run:
            self._chunks.append(
                dataclasses.replace(
                    run[0],
                    content="".join(c.content for c in run),
                    thinking="".join(c.thinking for c in run),
                    logprobs=tuple(p for c in run for p in c.logprobs),
                )
            )
        run.clear()
        self._run_chars = 0

    @property
    def complete(self) -> bool:
        return self.storable and self.finals == self.choices

    def chunks(self) -> tuple[ChatChunk, ...]:
        self._end_run()
        return tuple(self._chunks)


def _joinable(a: ChatChunk, b: ChatChunk) -> bool:
    """Two pieces of the same kind (content or thinking) of one choice, neither final."""
    if a.done or b.done or a.tool_calls or b.tool_calls or a.index != b.index:
        return False
    if a.model != b.model or a.context is not None or b.context is not None:
        return False
    return (not a.thinking and not b.thinking) or (not a.content and not b.content)


def replayed(entry: Entry, began: float) -> tuple[ChatChunk, ...]:
    """The stored chunks with each final one's prompt reported as cached and the
    replay's own time as its timings."""
    spent = max(1, int((time.perf_counter() - began) * 1e9))
    out = []
    for c in entry.chunks:
        if c.done and c.metrics is not None:
            m = dataclasses.replace(
                c.metrics, cached_tokens=c.metrics.prompt_tokens,
                total_ns=spent, load_ns=0, prompt_eval_ns=0, eval_ns=spent,
            )  # fmt: skip
            c = dataclasses.replace(c, metrics=m)
        out.append(c)
    return tuple(out)


class MemoryCache:
    """L1: entries by key, least recently used first out, their encoded sizes summed
    to at most ``capacity`` bytes; each expires at its own time."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._items: OrderedDict[str, tuple[float, Entry]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str, now: float) -> Entry | None:
        found = self._items.get(key)
        if found is None:
            return None
        expires, entry = found
        if expires <= now:
            self._drop(key)
            return None
        self._items.move_to_end(key)
        return entry

    def put(self, key: str, entry: Entry, expires: float) -> None:
        if entry.size > self.capacity:
            return
        if key in self._items:
            self._drop(key)
        self._items[key] = (expires, entry)
        self.used += entry.size
        while self.used > self.capacity:
            self._drop(next(iter(self._items)))

    def _drop(self, key: str) -> None:
        _, entry = self._items.pop(key)
        self.used -= entry.size

    def clear(self) -> None:
        self._items.clear()
        self.used = 0


class RedisCache:
    """L2: one string per entry under ``prefix + "cache:" + key``, with Redis's own
    expiry. Reads are awaited (the socket timeout, :data:`TIMEOUT_S`, bounds them); writes are sent without
    waiting for them and finished when the cache closes."""

    def __init__(self, url: str, prefix: str, connections: int = 32, client: Any = None) -> None:
        if client is None:
            import redis.asyncio as aioredis

            pool = aioredis.BlockingConnectionPool.from_url(
                url, max_connections=connections, timeout=TIMEOUT_S,
                socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S,
            )  # fmt: skip
            client = aioredis.Redis(connection_pool=pool)
        self.redis: Any = client
        self.prefix = prefix + "cache:"
        self._writes: set[asyncio.Task[None]] = set()
        self._paused_until = 0.0
        self._logged = 0.0

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._paused_until

    async def get(self, key: str) -> Entry | None:
        if not self.available:
            return None
        try:
            data = await self.redis.get(self.prefix + key)  # bounded by the socket timeout
        except Exception as exc:  # noqa: BLE001 - any Redis failure is a miss
            self._failed("read", exc)
            return None
        if data is None:
            return None
        entry = decode(bytes(data))
        if entry is None:
            log.warning("a response cache entry in Redis could not be read; ignored")
        return entry

    def put(self, key: str, entry: Entry, ttl_s: float) -> None:
        """Send the entry to Redis; the reply does not wait for it."""
        if not self.available or len(self._writes) >= MAX_WRITES:
            return
        task = asyncio.ensure_future(self._set(key, entry.data, ttl_s))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _set(self, key: str, data: bytes, ttl_s: float) -> None:
        try:
            await self.redis.set(self.prefix + key, data, px=max(1, int(ttl_s * 1000)))
        except Exception as exc:  # noqa: BLE001 - a failed write only loses the entry
            self._failed("write", exc)

    def _failed(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        self._paused_until = now + PAUSE_S
        if now - self._logged > 60:
            self._logged = now
            log.warning(
                "response cache: a Redis %s failed (%s: %s); serving without Redis for %.0f s",
                what, type(exc).__name__, exc, PAUSE_S,
            )  # fmt: skip

    async def flush(self) -> None:
        """Wait for the writes in flight."""
        if self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)

    async def aclose(self) -> None:
        await self.flush()
        try:
            await self.redis.aclose()
        except Exception as exc:  # noqa: BLE001 - closing a broken connection
            log.debug("response cache: closing Redis: %s", exc)
