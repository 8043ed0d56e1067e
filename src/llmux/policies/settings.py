"""Configuration of the content policies: the ``[cache]``, ``[redaction]`` and
``[moderation]`` tables (docs/guardrails.md).

Each table may carry ``keys``: per-credential overrides, by the principal's name or id
(an API key's name, an OAuth2 client's id, a user's name), each a partial table merged
over the defaults. :class:`PerKey` resolves and memoises them.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from llmux.core.context import Principal


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per-credential overrides (by key name or id): a partial table each",
    )


S = TypeVar("S", bound=_Section)
T = TypeVar("T")


class PerKey(Generic[S]):
    """The settings that apply to a principal: its override merged over the defaults,
    each validated once (a bad override fails when the server starts)."""

    def __init__(self, base: S) -> None:
        self.base = base
        self._merged: dict[str, S] = {}
        for name, override in base.keys.items():
            data = {**base.model_dump(exclude={"keys"}), **override}
            self._merged[name] = type(base).model_validate(data)

    def merged(self) -> list[S]:
        return list(self._merged.values())

    def all(self) -> list[S]:
        return [self.base, *self._merged.values()]

    def of(self, principal: Principal) -> S:
        if not self._merged:
            return self.base
        for name in (principal.id, principal.name):
            if name is not None and name in self._merged:
                return self._merged[name]
        return self.base


class Built(Generic[S, T]):
    """What a policy makes of each of its settings (a redactor, a moderator), made once
    when the server starts, and found per principal."""

    def __init__(self, base: S, make: Callable[[S], T]) -> None:
        self.per_key = PerKey(base)
        self._made = {id(s): (s, make(s)) for s in self.per_key.all()}

    def of(self, principal: Principal) -> tuple[S, T]:
        return self._made[id(self.per_key.of(principal))]

    def all(self) -> list[tuple[S, T]]:
        return list(self._made.values())


class CacheSettings(_Section):
    """The response cache (docs/guardrails.md#response-cache): replies of reproducible
    chat requests, kept in this process (an LRU bounded by bytes) and/or in Redis."""

    enabled: bool = Field(default=False, description="serve repeated requests from the cache")
    only_reproducible: bool = Field(
        default=True,
        description="cache only requests whose reply is reproducible (temperature 0, or a"
        " seed); others only when they ask (Cache-Control: max-age=N)",
    )
    memory_bytes: int = Field(
        default=64 * 2**20,
        ge=0,
        description="size of the in-process LRU, by the encoded size of its entries (0: off;"
        " top level only)",
    )
    memory_ttl_s: float = Field(
        default=300.0, ge=0, description="how long a reply stays in memory (0: not in memory)"
    )
    redis: bool = Field(default=False, description="keep replies in Redis too ([redis] url)")
    redis_ttl_s: float = Field(default=3600.0, gt=0, description="how long a reply stays in Redis")
    max_entry_bytes: int = Field(
        default=2**20, ge=1, description="a reply larger than this (encoded) is not stored"
    )
    semantic: bool = Field(
        default=False,
        description="also answer a request whose last user message is worded like a stored"
        " one (an embedding's cosine, plus the negation guard)",
    )
    semantic_model: str = Field(
        default="", description="the embedding model the semantic cache asks (through the gateway)"
    )
    semantic_threshold: float = Field(
        default=0.95, gt=0, le=1, description="the least cosine similarity of a semantic hit"
    )
    semantic_entries: int = Field(
        default=10000,
        ge=1,
        description="vectors the semantic index keeps in this process (top level only)",
    )
    models: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per-model overrides, by name or glob pattern (first match): a partial"
        " table each",
    )

    def model_override(self, model: str) -> dict[str, Any] | None:
        """The first ``models`` entry whose pattern matches ``model``, if any."""
        name = model.lower()
        for pattern, override in self.models.items():
            p = pattern.lower()
            if p == name or p == name.removesuffix(":latest") or fnmatch.fnmatchcase(name, p):
                return override
        return None

    def overrides(self) -> list[dict[str, Any]]:
        """Every override table: per key, per model, and per model within a key's."""
        tables = [*self.keys.values(), *self.models.values()]
        return tables + [m for k in self.keys.values() for m in (k.get("models") or {}).values()]

    @property
    def active(self) -> bool:
        """Whether the cache serves anything: on at the top, for a key, or for a model."""
        return self.enabled or any(t.get("enabled") is True for t in self.overrides())

    @property
    def semantic_active(self) -> bool:
        """Whether the semantic cache is on anywhere: at the top, for a key or a model."""
        return self.semantic or any(t.get("semantic") is True for t in self.overrides())


Action = Literal["mask", "block", "pseudonymize", "allow"]


class RedactionSettings(_Section):
    """PII redaction (docs/guardrails.md#pii-redaction): recognised values in prompts are
    masked, refused or replaced by placeholders that the reply turns back."""

    enabled: bool = Field(default=False, description="redact personal data in prompts")
    action: Action = Field(
        default="mask", description="what is done with a found value, unless `actions` says"
    )
    actions: dict[str, Action] = Field(
        default_factory=dict,
        description="per entity type (phone, id_card, ...; a pattern's or list's name)",
    )
    kinds: list[str] = Field(
        default_factory=lambda: ["id_card", "credit_code", "bank_card", "phone", "email", "ip"],
        description="the built-in recognisers that run",
    )
    patterns: dict[str, str] = Field(
        default_factory=dict, description="name -> regular expression: the operator's own"
    )
    words: dict[str, list[str]] = Field(
        default_factory=dict,
        description="name -> words or phrases found anywhere, case-insensitively",
    )
    word_files: dict[str, Path] = Field(
        default_factory=dict, description="name -> a file of words, one a line"
    )
    replies: bool = Field(
        default=True,
        description="mask values that appear in replies too (a stream holds back only the"
        " tail that could still grow into one)",
    )
    history: bool = Field(default=True, description="store conversations redacted")
    logs: bool = Field(default=True, description="redact log lines")
    hold_back: int = Field(
        default=256, ge=24, le=4096, description="the longest tail a stream holds back"
    )


class ModerationSettings(_Section):
    """Moderation (docs/guardrails.md#moderation): word and pattern lists per category,
    checked in prompts before generation and in replies as they stream."""

    enabled: bool = Field(default=False, description="check prompts and replies")
    words: dict[str, list[str]] = Field(
        default_factory=dict,
        description="category -> words or phrases (Chinese or English), case-insensitively",
    )
    word_files: dict[str, list[Path]] = Field(
        default_factory=dict, description="category -> files of words, one a line"
    )
    patterns: dict[str, list[str]] = Field(
        default_factory=dict, description="category -> regular expressions"
    )
    prompts: bool = Field(default=True, description="refuse a flagged prompt (400)")
    replies: bool = Field(
        default=True, description="end a flagged reply with finish reason content_filter"
    )
    window: int = Field(
        default=256, ge=16, le=65536, description="characters of a reply checked together"
    )
    judge_model: str | None = Field(
        default=None, description="a model that classifies prompts too, local or upstream"
    )
    judge_prompt: str = Field(
        default=(
            "You are a content moderator. Decide which of these categories the text between"
            ' the <text> tags falls in: {categories}. Answer with JSON: {"flagged": [...]},'
            " listing only categories that clearly apply, or an empty list.\n"
            "<text>\n{text}\n</text>"
        ),
        description="the judge's prompt: {categories} and {text} are filled in",
    )
    judge_categories: list[str] = Field(
        default_factory=list,
        description="what the judge may answer; empty: OpenAI's 13 and the lists' own",
    )
    judge_max_chars: int = Field(
        default=8000, ge=100, le=1_000_000, description="the most of a text the judge reads"
    )
