"""Configuration of the metrics and the traces: the ``[metrics]`` and ``[tracing]``
tables (docs/observability.md).

Plain pydantic, so that reading the settings never imports OpenTelemetry: only
:func:`llmux.services.build_tracing` does, when ``enabled`` is true.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TracingSettings(BaseModel):
    """OpenTelemetry traces, exported by OTLP/HTTP (the ``otel`` extra)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=False,
        description="one span per model operation (GenAI conventions) with queue, load,"
        " prefill, decode and upstream children; needs `pip install 'llmux[otel]'`",
    )
    endpoint: str = Field(
        default="http://127.0.0.1:4318/v1/traces",
        description="the OTLP/HTTP traces endpoint of a collector (protobuf POSTs)",
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="extra HTTP headers sent with every export"
    )
    service_name: str = Field(default="llmux", min_length=1, description="`service.name`")
    sample_ratio: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="share of traces kept when no sampled `traceparent` comes with the"
        " request (a caller's sampling decision is followed)",
    )
    timeout_s: float = Field(default=10.0, gt=0, description="seconds one export may take")


class MetricsSettings(BaseModel):
    """Prometheus metrics at ``GET /metrics`` (docs/observability.md#metrics)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=True, description="serve /metrics and count requests, the engine and upstreams"
    )
    token: str | None = Field(
        default=None,
        description="a bearer token that may read /metrics when access control is on (for a"
        " Prometheus without an API key); otherwise it needs a credential with the metrics"
        " scope",
    )
    max_models: int = Field(
        default=100,
        ge=1,
        description="model names that get their own series; names past it, and names no"
        " backend serves, are counted as `other`",
    )
