"""Upstream models as core values: listing entries and, for models only OpenAI-type
upstreams serve (they have no ``/api/show``), a small card. The upstream's name is in
``details.upstream`` and ``owned_by``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from llmux.core.models import ModelCard, ModelInfo
from llmux.protocols.times import parse_time
from llmux.upstream.server import Upstream

EPOCH = datetime.fromtimestamp(0, UTC)


@dataclass(frozen=True, slots=True)
class Listed:
    """One model an upstream serves: the exposed name and the upstream's own name."""

    name: str
    upstream: Upstream
    upstream_model: str

    @property
    def entry(self) -> dict[str, Any]:
        return self.upstream.entry(self.upstream_model)


def _modified(item: Listed) -> datetime:
    e = item.entry
    return parse_time(e.get("created")) or parse_time(e.get("modified_at")) or EPOCH


def details(item: Listed) -> dict[str, Any]:
    out: dict[str, Any] = {
        "parent_model": "",
        "format": "",
        "family": "",
        "families": None,
        "parameter_size": "",
        "quantization_level": "",
    }
    raw = item.entry.get("details")
    if isinstance(raw, dict):
        out.update(raw)
    out["upstream"] = item.upstream.name
    return out


def model_info(item: Listed) -> ModelInfo:
    e = item.entry
    digest = (
        e.get("digest")
        or hashlib.sha256(f"{item.upstream.name}/{item.upstream_model}".encode()).hexdigest()
    )
    size = e.get("size")
    return ModelInfo(
        name=item.name,
        modified_at=_modified(item),
        size=size if isinstance(size, int) else 0,
        digest=str(digest),
        details=details(item),
        owned_by=item.upstream.name,
        remote_model=item.upstream_model,
        remote_host=item.upstream.settings.url,
    )


def card(item: Listed) -> ModelCard:
    return ModelCard(
        name=item.name,
        modified_at=_modified(item),
        modelfile=f"# served by upstream '{item.upstream.name}' as {item.upstream_model}\n",
        details=details(item),
        capabilities=("completion", "tools"),
        remote_model=item.upstream_model,
        remote_host=item.upstream.settings.url,
    )
