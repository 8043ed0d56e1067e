"""A small subset of Go's text/template, for Ollama ``template`` overrides.

Supported: ``{{ .Name }}`` fields, ``{{ if .X }} ... {{ else }} ... {{ end }}``, and
the ``{{-`` / ``-}}`` whitespace trims. Anything else is rejected with a clear error
rather than rendered wrongly.
"""

from __future__ import annotations

import re
from typing import Any

from llmux.errors import InvalidRequest

_ACTION = re.compile(r"{{(-?)\s*(.*?)\s*(-?)}}", re.S)
_FIELD = re.compile(r"^\.([A-Za-z_][A-Za-z0-9_]*)$")


def _tokens(src: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    for m in _ACTION.finditer(src):
        text = src[pos : m.start()]
        if m.group(1):
            text = text.rstrip()
        if out and out[-1][0] == "trim":
            out.pop()
            text = text.lstrip()
        out.append(("text", text))
        out.append(("action", m.group(2)))
        if m.group(3):
            out.append(("trim", ""))
        pos = m.end()
    text = src[pos:]
    if out and out[-1][0] == "trim":
        out.pop()
        text = text.lstrip()
    out.append(("text", text))
    return out


def render_go_template(src: str, values: dict[str, Any]) -> str:
    tokens = _tokens(src)
    out, pos = _render(tokens, 0, values, stop=())
    if pos != len(tokens):
        raise InvalidRequest("template: unexpected {{ end }} or {{ else }}", param="template")
    return out


def _value(expr: str, values: dict[str, Any]) -> Any:
    m = _FIELD.match(expr)
    if not m:
        raise InvalidRequest(f"template: unsupported expression {{{{ {expr} }}}}", param="template")
    return values.get(m.group(1), "")


def _render(
    tokens: list[tuple[str, str]], pos: int, values: dict[str, Any], stop: tuple[str, ...]
) -> tuple[str, int]:
    out: list[str] = []
    while pos < len(tokens):
        kind, body = tokens[pos]
        if kind == "text":
            out.append(body)
            pos += 1
            continue
        if body in stop:
            return "".join(out), pos
        if body.startswith("if "):
            cond = bool(_value(body[3:].strip(), values))
            then, pos = _render(tokens, pos + 1, values, stop=("else", "end"))
            other = ""
            if pos < len(tokens) and tokens[pos][1] == "else":
                other, pos = _render(tokens, pos + 1, values, stop=("end",))
            if pos >= len(tokens) or tokens[pos][1] != "end":
                raise InvalidRequest("template: {{ if }} without {{ end }}", param="template")
            out.append(then if cond else other)
            pos += 1
            continue
        if body in ("else", "end"):
            return "".join(out), pos
        out.append(str(_value(body, values)))
        pos += 1
    return "".join(out), pos
