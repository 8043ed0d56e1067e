"""The common subset of Go's text/template, for Ollama ``TEMPLATE`` layers and
``template`` overrides.

Supported:

* fields ``.System``, ``.Prompt``, ``.Response``, ``.Messages`` (items have ``.Role``,
  ``.Content``), nested ``.A.B``, the root ``$`` / ``$.X``, variables ``$x`` / ``$x.Y``
  and ``{{ $x := ... }}``;
* ``{{ if }}`` / ``{{ else if }}`` / ``{{ else }}`` / ``{{ end }}``, ``{{ with }}``,
  ``{{ range .X }}`` (also ``range $i, $m := .X``, and ``{{ else }}`` for an empty list);
* functions ``eq ne lt le gt ge and or not len index slice``, parentheses, string,
  number and boolean literals; ``{{-`` / ``-}}`` trims and ``{{/* comments */}}``.

Not supported (rejected with a clear error rather than rendered wrongly): pipelines
with ``|``, ``define``/``template``/``block``, method calls, and other functions
(``json``, ``toJson``, ``currentDate``, ...).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmux.errors import InvalidRequest

_ACTION = re.compile(r"{{(-?)\s*(.*?)\s*(-?)}}", re.S)
_ATOM = re.compile(r'\s*(?:("(?:[^"\\]|\\.)*")|(`[^`]*`)|(\()|(\))|(:=)|(,)|([^\s(),]+))', re.S)


def _fail(message: str) -> InvalidRequest:
    return InvalidRequest(f"template: {message}", param="template")


# -- lexing ---------------------------------------------------------------------------


def _tokens(src: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    for m in _ACTION.finditer(src):
        text = src[pos : m.start()]
        if trim_next:
            text = text.lstrip()
        if m.group(1):
            text = text.rstrip()
        out.append(("text", text))
        body = m.group(2)
        if not (body.startswith("/*") and body.endswith("*/")):
            out.append(("action", body))
        trim_next = bool(m.group(3))
        pos = m.end()
    text = src[pos:]
    out.append(("text", text.lstrip() if trim_next else text))
    return out


def _atoms(expr: str) -> list[str]:
    atoms, pos = [], 0
    while pos < len(expr.rstrip()):
        m = _ATOM.match(expr, pos)
        if not m:
            raise _fail(f"cannot read {{{{ {expr} }}}}")
        atoms.append(next(g for g in m.groups() if g is not None))
        pos = m.end()
    return atoms


# -- the tree -------------------------------------------------------------------------


@dataclass
class _Block:
    kind: str  # root, if, with, range
    head: list[str] = field(default_factory=list)  # expression atoms (if/with/range)
    names: list[str] = field(default_factory=list)  # range variables
    body: list[Any] = field(default_factory=list)
    branches: list[tuple[list[str], list[Any]]] = field(default_factory=list)  # else if
    other: list[Any] | None = None  # else


def _parse(tokens: list[tuple[str, str]]) -> _Block:
    root = _Block("root")
    stack = [root]
    current: list[Any] = root.body
    for kind, body in tokens:
        if kind == "text":
            current.append(body)
            continue
        word = body.split(None, 1)[0] if body else ""
        rest = body[len(word) :].strip()
        top = stack[-1]
        if word in ("if", "with", "range"):
            block = _Block(word, head=_atoms(rest))
            if word == "range" and ":=" in block.head:
                split = block.head.index(":=")
                block.names = [a for a in block.head[:split] if a != ","]
                block.head = block.head[split + 1 :]
            current.append(block)
            stack.append(block)
            current = block.body
        elif word == "else":
            if top.kind == "root" or top.other is not None:
                raise _fail("{{ else }} outside an if, with or range")
            if rest.startswith("if ") and top.kind == "if":
                top.branches.append((_atoms(rest[3:]), []))
                current = top.branches[-1][1]
            else:
                top.other = []
                current = top.other
        elif word == "end":
            if top.kind == "root":
                raise _fail("unexpected {{ end }}")
            stack.pop()
            current = _open_list(stack[-1])
        elif word in ("define", "template", "block", "break", "continue"):
            raise _fail(f"{{{{ {word} }}}} is not supported; see docs/models.md")
        else:
            current.append(_atoms(body))
    if len(stack) > 1:
        raise _fail(f"{{{{ {stack[-1].kind} }}}} without {{{{ end }}}}")
    return root


def _open_list(block: _Block) -> list[Any]:
    if block.other is not None:
        return block.other
    if block.branches:
        return block.branches[-1][1]
    return block.body


# -- evaluation -----------------------------------------------------------------------


def truthy(value: Any) -> bool:
    return value not in (None, False, 0, "") and not (
        isinstance(value, (list, tuple, dict)) and not value
    )


def _field(value: Any, path: Sequence[str]) -> Any:
    for part in path:
        value = value.get(part) if isinstance(value, dict) else getattr(value, part, None)
    return value


def _slice(value: Any, *bounds: Any) -> Any:
    """Go's ``slice x i j``: ``x[i:j]`` (``slice x i`` is ``x[i:]``)."""
    start, end = (int(bounds[0]) if bounds else 0), (int(bounds[1]) if len(bounds) > 1 else None)
    return value[start:end]


FUNCS: dict[str, Callable[..., Any]] = {
    "eq": lambda a, *bs: any(a == b for b in bs),
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "not": lambda a: not truthy(a),
    "len": lambda a: len(a or ()),
    "index": lambda a, *keys: _field(a, [str(k) for k in keys]) if isinstance(a, dict)
    else a[int(keys[0])],
    "slice": _slice,
}  # fmt: skip


class _Scope:
    def __init__(self, root: Any) -> None:
        self.root = root
        self.vars: list[dict[str, Any]] = [{"$": root}]

    def lookup(self, name: str) -> Any:
        for frame in reversed(self.vars):
            if name in frame:
                return frame[name]
        raise _fail(f"undefined variable {name}")


def _operand(atoms: list[str], pos: int, dot: Any, scope: _Scope) -> tuple[Any, int]:
    atom = atoms[pos]
    if atom == "(":
        depth, end = 1, pos + 1
        while end < len(atoms) and depth:
            depth += {"(": 1, ")": -1}.get(atoms[end], 0)
            end += 1
        if depth:
            raise _fail("unbalanced parentheses")
        return _command(atoms[pos + 1 : end - 1], dot, scope), end
    if atom.startswith('"'):
        try:
            return json.loads(atom), pos + 1
        except ValueError:
            return atom[1:-1], pos + 1
    if atom.startswith("`"):
        return atom[1:-1], pos + 1
    if atom in ("true", "false"):
        return atom == "true", pos + 1
    if atom == "nil":
        return None, pos + 1
    if re.fullmatch(r"-?\d+", atom):
        return int(atom), pos + 1
    if atom == ".":
        return dot, pos + 1
    if atom.startswith("."):
        return _field(dot, atom[1:].split(".")), pos + 1
    if atom.startswith("$"):
        name, _, path = atom.partition(".")
        return _field(scope.lookup(name), path.split(".") if path else []), pos + 1
    raise _fail(f"unsupported expression {atom!r}; see docs/models.md for what renders")


def _command(atoms: list[str], dot: Any, scope: _Scope) -> Any:
    if not atoms:
        raise _fail("empty expression")
    if "|" in atoms:
        raise _fail("pipelines with | are not supported")
    name = atoms[0]
    if name in ("and", "or"):
        result: Any = None
        pos = 1
        while pos < len(atoms):
            result, pos = _operand(atoms, pos, dot, scope)
            if truthy(result) != (name == "and"):
                return result
        return result
    if name in FUNCS:
        args, pos = [], 1
        while pos < len(atoms):
            value, pos = _operand(atoms, pos, dot, scope)
            args.append(value)
        try:
            return FUNCS[name](*args)
        except (TypeError, IndexError, KeyError, ValueError) as exc:
            raise _fail(f"{name}: {exc}") from None
    if name[0].isalpha():
        raise _fail(f"function {name!r} is not supported; see docs/models.md")
    value, pos = _operand(atoms, 0, dot, scope)
    if pos != len(atoms):
        raise _fail(f"cannot read {' '.join(atoms)!r}")
    return value


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _run(nodes: list[Any], dot: Any, scope: _Scope, out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, list):
            if len(node) > 2 and node[0].startswith("$") and node[1] == ":=":
                scope.vars[-1][node[0]] = _command(node[2:], dot, scope)
            else:
                out.append(_text(_command(node, dot, scope)))
        else:
            _block(node, dot, scope, out)


def _block(block: _Block, dot: Any, scope: _Scope, out: list[str]) -> None:
    value = _command(block.head, dot, scope)
    scope.vars.append({})
    try:
        if block.kind == "range":
            items = list(value.items()) if isinstance(value, dict) else list(enumerate(value or []))
            for key, item in items:
                if block.names:
                    scope.vars[-1][block.names[-1]] = item
                if len(block.names) > 1:
                    scope.vars[-1][block.names[0]] = key
                _run(block.body, item, scope, out)
            if not items and block.other is not None:
                _run(block.other, dot, scope, out)
            return
        if truthy(value):
            _run(block.body, value if block.kind == "with" else dot, scope, out)
            return
        for head, body in block.branches:
            if truthy(_command(head, dot, scope)):
                _run(body, dot, scope, out)
                return
        if block.other is not None:
            _run(block.other, dot, scope, out)
    finally:
        scope.vars.pop()


def render_go_template(src: str, values: dict[str, Any]) -> str:
    tree = _parse(_tokens(src))
    out: list[str] = []
    _run(tree.body, values, _Scope(values), out)
    return "".join(out)
