"""An installed model as ``show`` reports it: Modelfile, parameters, template, details,
GGUF metadata and capabilities."""

from __future__ import annotations

from llmux.core.models import ModelCard
from llmux.models.capabilities import capabilities
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
    template = model_template(store, record)
    details = record.details()
    if info.context_length:
        details["context_length"] = info.context_length
    if info.embedding_length:
        details["embedding_length"] = info.embedding_length
    shown = store.gguf_verbose(record) if verbose else info
    return ModelCard(
        name=record.name.display,
        modified_at=record.modified_at,
        modelfile=render_modelfile(record, template),
        parameters=parameters_text(record.params),
        template=template,
        details=details,
        model_info=shown.model_info(verbose),
        capabilities=tuple(capabilities(info, template if rendered is None else rendered)),
        system=record.layers.get("system") or None,
        license=record.layers.get("license") or None,
        messages=tuple(record_messages(record)),
    )
