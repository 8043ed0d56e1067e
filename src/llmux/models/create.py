"""``/api/create``: a new model from an installed one or from uploaded GGUF blobs,
with layers for a template, system prompt, parameters, messages and licenses, and an
optional quantisation through llama.cpp's quantizer.

Progress, as Ollama reports it: ``parsing GGUF`` (when files are given), ``using
existing layer sha256:…`` / ``creating new layer sha256:…`` per layer (``quantizing
<from> model to <to>`` first when asked), ``writing manifest``, ``success``.

A given template, system prompt, message list or license replaces the base model's;
given parameters are merged over the base model's.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from llmux.core.names import ModelName
from llmux.engine.gotemplate import check_go_template
from llmux.errors import BackendError, InvalidRequest, ModelNotFound
from llmux.models.gguf import GGUFInfo, read_gguf
from llmux.models.progress import Progress, Report
from llmux.models.store import LAYER_PREFIX, MODEL_MEDIA, ModelStore, gguf_config
from llmux.protocols.ollama.convert import parse_options

PROJECTOR_MEDIA = LAYER_PREFIX + "projector"
ADAPTER_MEDIA = LAYER_PREFIX + "adapter"
REPLACED = ("template", "system", "messages", "license")
QUANT_TYPES = {  # name -> llama.cpp LLAMA_FTYPE_* constant name
    "q4_0": "MOSTLY_Q4_0",
    "q4_1": "MOSTLY_Q4_1",
    "q5_0": "MOSTLY_Q5_0",
    "q5_1": "MOSTLY_Q5_1",
    "q8_0": "MOSTLY_Q8_0",
    "q2_k": "MOSTLY_Q2_K",
    "q3_k_s": "MOSTLY_Q3_K_S",
    "q3_k_m": "MOSTLY_Q3_K_M",
    "q3_k_l": "MOSTLY_Q3_K_L",
    "q4_k_s": "MOSTLY_Q4_K_S",
    "q4_k_m": "MOSTLY_Q4_K_M",
    "q5_k_s": "MOSTLY_Q5_K_S",
    "q5_k_m": "MOSTLY_Q5_K_M",
    "q6_k": "MOSTLY_Q6_K",
    "f16": "MOSTLY_F16",
}


@dataclass(slots=True)
class CreateSpec:
    """What ``/api/create`` asks for (the CLI builds it from a Modelfile)."""

    model: str
    from_: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    adapters: dict[str, str] = field(default_factory=dict)
    template: str | None = None
    system: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] | None = None
    license: list[str] | None = None
    quantize: str | None = None


class Create:
    def __init__(self, store: ModelStore, spec: CreateSpec) -> None:
        """Checks what can be checked before anything streams (400/404 here)."""
        self.store = store
        self.spec = spec
        self.name = ModelName.parse(spec.model)
        if spec.template:
            check_go_template(spec.template)  # 400 for a template that cannot render
        parse_options(spec.parameters)  # 400 for a parameter no request could use
        if not spec.files and not spec.from_:
            raise InvalidRequest(
                "neither 'from' nor 'files' was given: name a model to build on, or upload "
                "a GGUF with POST /api/blobs/<digest> and pass it in 'files'"
            )
        for digest in [*spec.files.values(), *spec.adapters.values()]:
            if not store.blob_path(digest).is_file():
                raise InvalidRequest(
                    f"blob {digest} not found; upload it first with POST /api/blobs/{digest}"
                )
        self.base = None if spec.files else self._base(spec.from_ or "")
        if spec.quantize and spec.quantize.lower() not in QUANT_TYPES:
            raise InvalidRequest(
                f"unsupported quantization type {spec.quantize!r}; "
                f"use one of {', '.join(sorted(QUANT_TYPES))}",
                param="quantize",
            )

    def _base(self, name: str) -> dict[str, Any]:
        base = ModelName.parse(name)
        if not self.store.exists(base):
            raise ModelNotFound(base.display, hint=f"try `llmux pull {name}` first")
        manifest: dict[str, Any] = json.loads(self.store.manifest_path(base).read_bytes())
        return manifest

    async def run(self, report: Report) -> None:
        layers, config = await self._model_layers(report)
        for media, digest in ((ADAPTER_MEDIA, d) for d in self.spec.adapters.values()):
            await self._check_gguf(digest, "adapter")
            layers.append(self._layer(media, digest, report, existing=True))
        if self.spec.quantize:
            layers, config = await self._quantize(layers, config, report)
        layers = self._text_layers(layers, report)
        config["rootfs"] = {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]}
        config_blob = self.store.write_blob(json.dumps(config).encode())
        report(Progress("writing manifest"))
        self.store.write_manifest(self.name, config_blob, layers)
        report(Progress("success"))

    async def _model_layers(self, report: Report) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        if self.base is not None:
            layers = [dict(layer) for layer in self.base.get("layers", [])]
            for layer in layers:
                report(Progress(f"using existing layer {layer['digest']}"))
            cfg = self.base.get("config") or {}
            config: dict[str, Any] = {}
            if cfg.get("digest"):
                try:
                    config = json.loads(self.store.blob_path(cfg["digest"]).read_bytes())
                except (OSError, ValueError):
                    config = {}
            return layers, config
        report(Progress("parsing GGUF"))
        layers, info = [], None
        for filename, digest in self.spec.files.items():
            gguf = await self._check_gguf(digest, filename)
            projector = gguf.architecture == "clip"
            media = PROJECTOR_MEDIA if projector else MODEL_MEDIA
            if not projector and info is not None:
                raise InvalidRequest(f"more than one model GGUF in files ({filename}); give one")
            info = info if projector else gguf
            layers.append(self._layer(media, digest, report, existing=True))
        if info is None:
            raise InvalidRequest("files hold no model GGUF (only projectors)")
        layers.sort(key=lambda layer: layer["mediaType"] != MODEL_MEDIA)
        return layers, gguf_config(info, [])

    async def _check_gguf(self, digest: str, what: str) -> GGUFInfo:
        try:
            return await anyio.to_thread.run_sync(read_gguf, self.store.blob_path(digest))
        except (ValueError, OSError) as exc:
            raise InvalidRequest(
                f"{what} ({digest}) is not a GGUF file ({exc}); llmux creates models from "
                "GGUF only: convert safetensors with llama.cpp's convert_hf_to_gguf.py first"
            ) from None

    def _layer(self, media: str, digest: str, report: Report, *, existing: bool) -> dict[str, Any]:
        word = "using existing" if existing else "creating new"
        report(Progress(f"{word} layer {digest}"))
        return {
            "mediaType": media,
            "digest": digest,
            "size": self.store.blob_path(digest).stat().st_size,
        }

    def _blob_layer(self, kind: str, data: bytes, report: Report) -> dict[str, Any]:
        digest = self.store.write_blob(data)["digest"]
        return self._layer(LAYER_PREFIX + kind, digest, report, existing=False)

    def _text_layers(self, layers: list[dict[str, Any]], report: Report) -> list[dict[str, Any]]:
        spec = self.spec
        given: dict[str, list[bytes]] = {}
        if spec.template is not None:
            given["template"] = [spec.template.encode()]
        if spec.system is not None:
            given["system"] = [spec.system.encode()]
        if spec.messages is not None:
            given["messages"] = [json.dumps(spec.messages).encode()]
        if spec.license is not None:
            given["license"] = [text.encode() for text in spec.license]
        if spec.parameters:
            given["params"] = [json.dumps(self._merged_params(layers)).encode()]
        kept = [layer for layer in layers if layer["mediaType"][len(LAYER_PREFIX) :] not in given]
        for kind, blobs in given.items():
            kept += [self._blob_layer(kind, data, report) for data in blobs]
        return kept

    def _merged_params(self, layers: list[dict[str, Any]]) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for layer in layers:
            if layer["mediaType"] == LAYER_PREFIX + "params":
                with contextlib.suppress(OSError, ValueError):
                    merged.update(json.loads(self.store.blob_path(layer["digest"]).read_bytes()))
        merged.update(self.spec.parameters)
        return merged

    async def _quantize(
        self, layers: list[dict[str, Any]], config: dict[str, Any], report: Report
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        target = (self.spec.quantize or "").lower()
        index = next(i for i, layer in enumerate(layers) if layer["mediaType"] == MODEL_MEDIA)
        source = self.store.blob_path(layers[index]["digest"])
        info = await anyio.to_thread.run_sync(read_gguf, source)
        report(Progress(f"quantizing {info.file_type} model to {target.upper()}"))
        fd, tmp = tempfile.mkstemp(dir=self.store.blobs, prefix=".tmp-quantize-")
        os.close(fd)
        try:
            await anyio.to_thread.run_sync(quantize, source, Path(tmp), target)
            added = await anyio.to_thread.run_sync(self.store.link_blob, Path(tmp))
        finally:
            Path(tmp).unlink(missing_ok=True)
        layers[index] = self._layer(MODEL_MEDIA, added["digest"], report, existing=False)
        quantized = await anyio.to_thread.run_sync(read_gguf, self.store.blob_path(added["digest"]))
        return layers, {**config, **gguf_config(quantized, [])}


def quantize(source: Path, dest: Path, target: str) -> None:
    """llama.cpp's quantizer (blocking; run it on a thread). Already-quantized weights
    are re-quantized, which loses more quality than quantizing F16/F32 weights."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, "LLAMA_FTYPE_" + QUANT_TYPES[target])
    params.allow_requantize = True
    params.nthread = 0
    rc = llama_cpp.llama_model_quantize(
        str(source).encode(), str(dest).encode(), ctypes.byref(params)
    )
    if rc != 0:
        raise BackendError(f"llama.cpp could not quantize {source.name} to {target} (code {rc})")
