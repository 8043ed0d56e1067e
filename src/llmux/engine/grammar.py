"""Grammars that force the output shape: any JSON object, or a JSON Schema.

Schemas are converted with llama-cpp-python's ``SchemaConverter``, with one correction:
its string character rule (``[^"\\]``) and its pattern ``.`` and ``[^...]`` classes let
raw control characters (U+0000..U+001F, U+007F) into a string, which no JSON parser
accepts. :class:`JsonSafeConverter` excludes them, as the plain ``"json"`` grammar
already does, so every schema path (``format``, ``response_format`` json_schema, forced
tool calls) produces output that parses: a newline inside a string is written ``\\n``.
"""

from __future__ import annotations

import json
from typing import Any

from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar, SchemaConverter

from llmux.core.request import OutputFormat
from llmux.errors import InvalidRequest

# what may stand unescaped inside a JSON string: anything but '"', '\' and controls
UNESCAPED = r'[^"\\\x7F\x00-\x1F]'
SAFE_CHAR = (
    UNESCAPED + r' | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'
)
_EXCLUDED = r'"\\\x7F\x00-\x1F'  # added to every negated class of a pattern rule


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
        return LlamaGrammar.from_string(schema_gbnf(schema), verbose=False)
    except Exception as exc:  # the converter raises plain exceptions for bad schemas
        raise InvalidRequest(f"format: unsupported JSON schema: {exc}", param="format") from exc


def schema_gbnf(schema: dict[str, Any]) -> str:
    """The GBNF text for a JSON Schema, strings free of raw control characters."""
    converter = JsonSafeConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    resolved = converter.resolve_refs(json.loads(json.dumps(schema)), "stdin")
    converter.visit(resolved, "")
    return str(converter.format_grammar())


class JsonSafeConverter(SchemaConverter):
    """``SchemaConverter`` whose string characters are JSON-safe.

    ``char`` and ``dot`` are reserved rule names (a schema's own names get a suffix), so
    only the converter's primitives are replaced here."""

    _in_pattern = False

    def _add_rule(self, name: str, rule: str) -> str:
        if name == "char":
            rule = SAFE_CHAR
        elif name == "dot":
            rule = UNESCAPED
        elif self._in_pattern:  # the pattern's rule and the sub-rules of its repetitions
            rule = safe_classes(rule)
        return str(super()._add_rule(name, rule))

    def _visit_pattern(self, pattern: str, name: str) -> str:
        self._in_pattern = True
        try:
            return str(super()._visit_pattern(pattern, name))
        finally:
            self._in_pattern = False


def safe_classes(rule: str) -> str:
    """Add the characters JSON strings can't hold raw to each negated ``[^...]`` class
    of a rule, leaving quoted literals alone."""
    out: list[str] = []
    i, n = 0, len(rule)
    while i < n:
        ch = rule[i]
        if ch == '"':  # a literal: copy through its closing quote
            j = i + 1
            while j < n and rule[j] != '"':
                j += 2 if rule[j] == "\\" else 1
            out.append(rule[i : j + 1])
            i = j + 1
        elif ch == "[":  # a class: copy through its closing bracket
            j = i + 1
            while j < n and rule[j] != "]":
                j += 2 if rule[j] == "\\" else 1
            body = rule[i + 1 : j]
            if body.startswith("^"):
                body = "^" + _EXCLUDED + body[1:]
            out.append("[" + body + "]")
            i = j + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)
