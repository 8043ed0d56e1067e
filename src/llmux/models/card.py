"""An installed model as ``show`` reports it: Modelfile, parameters, template, details,
GGUF metadata and capabilities."""

from __future__ import annotations

from typing import Any

from llmux.core.models import ModelCard
from llmux.models.capabilities import capabilities
from llmux.models.chatformats import recognise
from llmux.models.modelfile import parameters_text, record_messages, render_modelfile
from llmux.models.store import ModelRecord, ModelStore


def model_template(store: ModelStore, record: ModelRecord) -> str:
    """The template prompts render from: the model's template layer, else the GGUF's."""
    return record.layers.get("template") or store.gguf(record).chat_template or ""


def model_card(
    store: ModelStore, record: ModelRecord, verbose: bool, rendered: str | None = None
) -> ModelCard:
    """Reads the GGUF header (blocking: run it off the event loop). ``rendered`` is the
    template the engine renders prompts from, which capabilities are read from; it
    differs from the shown one only for a template layer llmux can't execute."""
    info = store.gguf(record)
    source = model_template(store, record)
    details = record.details()
    if info.context_length:
        details["context_length"] = info.context_length
    if info.embedding_length:
        details["embedding_length"] = info.embedding_length
    shown = store.gguf_verbose(record) if verbose else info
    template, params = shown_template(record, source)
    return ModelCard(
        name=record.name.display,
        modified_at=record.modified_at,
        modelfile=render_modelfile(record, template, params),
        parameters=parameters_text(params),
        template=template,
        details=details,
        model_info=shown.model_info(verbose),
        capabilities=tuple(capabilities(info, source if rendered is None else rendered)),
        system=record.layers.get("system") or None,
        license=record.layers.get("license") or None,
        messages=tuple(record_messages(record)),
    )


def shown_template(record: ModelRecord, template: str) -> tuple[str, dict[str, Any]]:
    """The template and parameters ``show`` reports. A model with no template layer of
    its own, whose GGUF's Jinja template is a chat format llmux recognises, shows that
    format's Go template and stop sequences, as Ollama does (``chatformats.py``)."""
    params = dict(record.params)
    found = None if "template" in record.layers else recognise(template)
    if found is None:
        return template, params
    params.setdefault("stop", list(found.stop))
    return found.template, params
