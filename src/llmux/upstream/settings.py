"""Configuration of upstream servers: the ``[[upstreams]]`` and ``[gateway]`` tables.

Defaults carry the resilience policy: exponential backoff on 429, quick retries on
502, randomised backoff on 503, a longer first-byte timeout after a 504, and a circuit
breaker that opens at a 50 % failure rate for 30 s and lets 5 trial calls through.
"""

from __future__ import annotations

import os
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

UpstreamType = Literal["ollama", "openai"]
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")


class RetryRule(BaseModel):
    """How one kind of failure is retried: ``delay = base_s * multiplier**n`` capped at
    ``max_s``, with ``jitter`` (0..1) of it randomised; a ``Retry-After`` wins."""

    model_config = ConfigDict(extra="forbid")

    retries: int = Field(default=1, ge=0, le=10)
    base_s: float = Field(default=0.1, ge=0)
    max_s: float = Field(default=5.0, ge=0)
    multiplier: float = Field(default=2.0, ge=1)
    jitter: float = Field(default=0.2, ge=0, le=1)
    timeout_factor: float = Field(
        default=1.0, ge=1, description="multiplies the first-byte timeout of the next try"
    )


DEFAULT_RETRY: dict[str, dict[str, float]] = {
    "429": {"retries": 3, "base_s": 1.0, "max_s": 20.0, "multiplier": 2.0, "jitter": 0.2},
    "502": {"retries": 2, "base_s": 0.05, "max_s": 0.2, "multiplier": 1.0, "jitter": 0.2},
    "503": {"retries": 2, "base_s": 0.5, "max_s": 4.0, "multiplier": 2.0, "jitter": 1.0},
    "504": {"retries": 1, "base_s": 0.1, "max_s": 0.1, "multiplier": 1.0, "timeout_factor": 2.0},
    "500": {"retries": 1, "base_s": 0.1, "max_s": 0.5, "multiplier": 2.0, "jitter": 0.5},
    "connect": {"retries": 1, "base_s": 0.1, "max_s": 0.5, "multiplier": 2.0, "jitter": 0.5},
}
RETRY_KEYS = {"429", "500", "502", "503", "504", "connect"}


class BreakerSettings(BaseModel):
    """A count-based sliding window: after ``min_calls`` of the last ``window`` calls,
    a failure rate at or above ``failure_rate`` opens the breaker for ``open_s``; then
    ``half_open_calls`` trial calls decide whether it closes or opens again."""

    model_config = ConfigDict(extra="forbid")

    failure_rate: float = Field(default=0.5, gt=0, le=1)
    window: int = Field(default=20, ge=1)
    min_calls: int = Field(default=10, ge=1)
    open_s: float = Field(default=30.0, gt=0)
    half_open_calls: int = Field(default=5, ge=1)


class UpstreamSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    type: UpstreamType
    url: str
    api_key: SecretStr | None = None
    api_key_env: str | None = None
    models: list[str] | dict[str, str] | None = None
    weight: float = Field(default=1.0, gt=0)
    timeout_s: float = Field(default=600.0, gt=0, description="total time for one request")
    connect_timeout_s: float = Field(default=5.0, gt=0)
    first_byte_timeout_s: float = Field(default=300.0, gt=0, description="until the first token")
    max_connections: int = Field(default=256, ge=1)
    retry: dict[str, RetryRule] = Field(default_factory=dict)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    health_interval_s: float = Field(default=30.0, ge=0, description="0 turns health checks off")
    refresh_s: float = Field(default=300.0, ge=0, description="model discovery refresh; 0 = once")
    fast_path: bool = Field(default=True, description="relay bytes when the client speaks our API")
    send_options: bool = Field(
        default=False,
        description="openai type: also send Ollama options the OpenAI API lacks (top_k, min_p,"
        " repeat_penalty, num_ctx, ...) as `options`, which llmux upstreams accept",
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"upstream name {v!r}: use letters, digits, '_', '-', '.'")
        return v

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        url = v.strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"upstream url {v!r} must start with http:// or https://")
        return url

    @field_validator("retry", mode="before")
    @classmethod
    def _merge_retry(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        unknown = set(v) - RETRY_KEYS
        if unknown:
            raise ValueError(f"retry keys {sorted(unknown)} unknown; use {sorted(RETRY_KEYS)}")
        return {k: {**DEFAULT_RETRY[k], **(v.get(k) or {})} for k in DEFAULT_RETRY}

    @model_validator(mode="after")
    def _finish(self) -> UpstreamSettings:
        if not self.retry:
            self.retry = {k: RetryRule(**d) for k, d in DEFAULT_RETRY.items()}  # type: ignore[arg-type]
        if self.api_key is None and self.api_key_env:
            value = os.environ.get(self.api_key_env)
            if not value:
                raise ValueError(
                    f"upstream {self.name!r}: environment variable {self.api_key_env} is not"
                    " set; export it or set api_key"
                )
            self.api_key = SecretStr(value)
        if isinstance(self.models, dict) and not all(self.models.values()):
            raise ValueError(f"upstream {self.name!r}: models table values must be names")
        return self

    @property
    def exposed(self) -> dict[str, str] | None:
        """Exposed name -> upstream name, or None when the models are discovered."""
        if self.models is None:
            return None
        if isinstance(self.models, list):
            return {m: m for m in self.models}
        return dict(self.models)


class GatewaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keepalive_s: float = Field(
        default=10.0,
        ge=0,
        description="while an upstream stream has no first token, send a keep-alive this"
        " often (SSE comment / NDJSON whitespace); 0 = off",
    )
    aliases: dict[str, str] = Field(
        default_factory=dict, description="exposed model name -> installed or upstream model"
    )
