"""Upstream models in the listing shapes: Ollama's ``/api/tags`` entries, OpenAI model
objects and a small ``/api/show`` for models only OpenAI-type upstreams serve. The
upstream's name is in ``details.upstream`` (and ``owned_by``)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from llmux.upstream.router import Listed


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _created(item: Listed) -> int:
    e = item.entry
    if isinstance(e.get("created"), int):
        return int(e["created"])
    text = e.get("modified_at")
    if isinstance(text, str):
        try:
            return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())
        except ValueError:
            pass
    return 0


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


def tag_entry(item: Listed) -> dict[str, Any]:
    e = item.entry
    digest = (
        e.get("digest")
        or hashlib.sha256(f"{item.upstream.name}/{item.upstream_model}".encode()).hexdigest()
    )
    return {
        "name": item.name,
        "model": item.name,
        "modified_at": e.get("modified_at") or _rfc3339(_created(item)),
        "size": int(e.get("size") or 0),
        "digest": digest,
        "details": details(item),
        "remote_model": item.upstream_model,
        "remote_host": item.upstream.settings.url,
    }


def model_object(item: Listed) -> dict[str, Any]:
    return {
        "id": item.name,
        "object": "model",
        "created": _created(item),
        "owned_by": item.upstream.name,
    }


def unique(items: list[Listed], taken: set[str]) -> list[Listed]:
    """One entry per name, skipping names already listed (local models win)."""
    out = []
    for item in items:
        if item.name in taken:
            continue
        taken.add(item.name)
        out.append(item)
    return out


def show_object(item: Listed) -> dict[str, Any]:
    """``/api/show`` for a model on an OpenAI-type upstream, which has no such call."""
    return {
        "modelfile": f"# served by upstream '{item.upstream.name}' as {item.upstream_model}\n",
        "parameters": "",
        "template": "",
        "details": details(item),
        "model_info": {},
        "capabilities": ["completion", "tools"],
        "modified_at": _rfc3339(_created(item)),
        "remote_model": item.upstream_model,
        "remote_host": item.upstream.settings.url,
    }
