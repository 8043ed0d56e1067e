"""What backends say about models, before any wire format: listing entries, the
details ``show`` reports, and loaded models. The protocol adapters render these."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model in a listing (``/api/tags``, ``/v1/models``)."""

    name: str
    modified_at: datetime
    size: int = 0
    digest: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    owned_by: str = "library"
    remote_model: str | None = None  # served by an upstream under this name
    remote_host: str | None = None

    @property
    def created(self) -> int:
        return int(self.modified_at.timestamp())


@dataclass(frozen=True, slots=True)
class ModelCard:
    """What ``show`` reports. ``raw`` is an upstream's own ``/api/show`` answer, passed
    through as it came (with ``details.upstream`` added)."""

    name: str
    modified_at: datetime
    modelfile: str = ""
    parameters: str = ""
    template: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    model_info: dict[str, Any] = field(default_factory=dict)
    capabilities: tuple[str, ...] = ()
    system: str | None = None
    license: str | None = None
    messages: tuple[dict[str, Any], ...] = ()
    remote_model: str | None = None
    remote_host: str | None = None
    raw: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class LoadedInfo:
    """A model loaded in the engine (``/api/ps``)."""

    name: str
    size: int
    digest: str
    details: dict[str, Any]
    expires_at: float | None
    context_length: int
    size_vram: int = 0
