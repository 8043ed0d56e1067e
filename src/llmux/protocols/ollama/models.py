"""Core model values -> Ollama's ``/api/tags``, ``/api/ps`` and ``/api/show`` shapes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from llmux.core.models import LoadedInfo, ModelCard, ModelInfo
from llmux.protocols.times import rfc3339

FOREVER = datetime(2318, 1, 1, tzinfo=UTC)  # what Ollama shows for keep_alive < 0


def tag_entry(info: ModelInfo) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": info.name,
        "model": info.name,
        "modified_at": rfc3339(info.modified_at),
        "size": info.size,
        "digest": info.digest,
        "details": info.details,
    }
    if info.remote_model is not None:
        out["remote_model"] = info.remote_model
        out["remote_host"] = info.remote_host
    return out


def ps_entry(m: LoadedInfo) -> dict[str, Any]:
    expires = FOREVER if m.expires_at is None else _clamped(m.expires_at)
    return {
        "name": m.name,
        "model": m.name,
        "size": m.size,
        "digest": m.digest,
        "details": m.details,
        "expires_at": rfc3339(expires),
        "size_vram": m.size_vram,
        "context_length": m.context_length,
    }


def _clamped(epoch: float) -> datetime:
    """An expiry as a date; one past what a date can hold shows as ``FOREVER``."""
    try:
        return min(datetime.fromtimestamp(epoch, UTC), FOREVER)
    except (OverflowError, OSError, ValueError):
        return FOREVER


def show_object(card: ModelCard) -> dict[str, Any]:
    if card.raw is not None:
        return card.raw
    out: dict[str, Any] = {
        "modelfile": card.modelfile,
        "parameters": card.parameters,
        "template": card.template,
        "details": card.details,
        "model_info": card.model_info,
        "capabilities": list(card.capabilities),
        "modified_at": rfc3339(card.modified_at),
    }
    if card.system:
        out["system"] = card.system
    if card.license:
        out["license"] = card.license
    if card.messages:
        out["messages"] = list(card.messages)
    if card.remote_model is not None:
        out["remote_model"] = card.remote_model
        out["remote_host"] = card.remote_host
    return out
