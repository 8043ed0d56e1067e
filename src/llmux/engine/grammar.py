"""Grammars that force the output shape: any JSON object, or a JSON Schema."""

from __future__ import annotations

import json
from typing import Any

from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

from llmux.core.request import OutputFormat
from llmux.errors import InvalidRequest


def grammar_for(fmt: OutputFormat) -> LlamaGrammar | None:
    """None for free text; raises InvalidRequest for a format we can't enforce."""
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
    if isinstance(fmt, dict):
        return schema_grammar(fmt)
    raise InvalidRequest(
        f'invalid format {fmt!r}: use "json" or a JSON Schema object', param="format"
    )


def schema_grammar(schema: dict[str, Any]) -> LlamaGrammar:
    try:
        return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    except Exception as exc:  # the converter raises plain exceptions for bad schemas
        raise InvalidRequest(f"format: unsupported JSON schema: {exc}", param="format") from exc
