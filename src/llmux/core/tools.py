"""Tool calling that works on any model.

* ``call_schema`` is the JSON Schema of one call (``{"name", "arguments"}``), tied per
  tool so the arguments match that tool's parameters. Under a grammar built from it,
  a forced call (``tool_choice`` required or named) is always valid.
* ``tools_prompt`` describes the tools in a system message for models whose chat
  template has no tool support.
* ``parse_tool_calls`` finds calls in model output: Hermes/Qwen ``<tool_call>`` blocks,
  or the whole reply being a call object or a list of them.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from llmux.core.request import Tool, ToolCall

_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)


def call_schema(tools: tuple[Tool, ...]) -> dict[str, Any]:
    variants = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t.name},
                "arguments": t.parameters or {"type": "object"},
            },
            "required": ["name", "arguments"],
        }
        for t in tools
    ]
    return variants[0] if len(variants) == 1 else {"anyOf": variants}


def tools_prompt(tools: tuple[Tool, ...], *, forced: bool) -> str:
    lines = ["You can call these functions:"]
    for t in tools:
        lines.append(
            json.dumps({"name": t.name, "description": t.description, "parameters": t.parameters})
        )
    if forced:
        lines.append(
            'Reply with one JSON object {"name": <function name>, "arguments": {...}} and nothing else.'
        )
    else:
        lines.append(
            'To call a function, reply with only a JSON object {"name": <function name>, "arguments": {...}}. '
            "Otherwise answer normally."
        )
    return "\n".join(lines)


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def _as_call(obj: Any, names: set[str], index: int) -> ToolCall | None:
    if not isinstance(obj, dict):
        return None
    inner = obj.get("function")
    fn: dict[str, Any] = inner if isinstance(inner, dict) else obj
    name = fn.get("name")
    args = fn.get("arguments", fn.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    if not isinstance(name, str) or name not in names or not isinstance(args, dict):
        return None
    return ToolCall(name=name, arguments=args, id=new_call_id(), index=index)


def parse_tool_calls(text: str, tools: tuple[Tool, ...]) -> tuple[tuple[ToolCall, ...], str]:
    """Calls found in ``text`` and the text that remains around them."""
    names = {t.name for t in tools}
    if not names:
        return (), text
    blocks = _BLOCK.findall(text)
    if blocks:
        calls: list[ToolCall] = []
        for raw in blocks:
            try:
                call = _as_call(json.loads(raw), names, len(calls))
            except json.JSONDecodeError:
                call = None
            if call:
                calls.append(call)
        if calls:
            return tuple(calls), _BLOCK.sub("", text).strip()
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.strip("`").removeprefix("json").strip()
    try:
        parsed = json.loads(stripped)
    except json.JSONDecodeError:
        return (), text
    items = parsed if isinstance(parsed, list) else [parsed]
    found = [_as_call(item, names, i) for i, item in enumerate(items)]
    if found and all(found):
        return tuple(c for c in found if c), ""
    return (), text
