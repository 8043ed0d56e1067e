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

``range`` iterates lists, maps and (as in Go 1.22+) a non-negative integer ``n`` as
``0 .. n-1``; anything else (a string, a boolean) is an error, as in Go.

Rendering has a budget (:data:`MAX_STEPS` evaluated nodes, :data:`MAX_OUTPUT`
characters, :data:`MAX_DEPTH` nested blocks or parentheses): a template that exceeds it
is an :class:`~llmux.errors.InvalidRequest` (400), never a frozen worker. Rendering is
plain CPU work; callers on the event loop run it in a thread.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmux.errors import InvalidRequest

_ATOM = re.compile(r'\s*(?:("(?:[^"\\]|\\.)*")|(`[^`]*`)|(\()|(\))|(:=)|(,)|([^\s(),]+))', re.S)


MAX_STEPS = 250_000  # nodes evaluated (text, actions, blocks, range iterations)
MAX_OUTPUT = 8 * 1024 * 1024  # characters rendered
MAX_DEPTH = 100  # nested blocks and parentheses


def _fail(message: str) -> InvalidRequest:
    return InvalidRequest(f"template: {message}", param="template")


def _over_budget(what: str) -> InvalidRequest:
    return _fail(
        f"rendering exceeds its budget ({what}); a template must not loop over the "
        "prompt or nest ranges over the messages; see docs/models.md"
    )


# -- lexing ---------------------------------------------------------------------------


def _tokens(src: str) -> list[tuple[str, str]]:
    """Text and action bodies, in order, in time linear in the length of ``src``. An
    action ends at the first ``}}`` (even one inside a quoted string, unlike Go)."""
    out: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    while (start := src.find("{{", pos)) >= 0:
        end = src.find("}}", start + 2)
        if end < 0:
            raise _fail("unclosed action: {{ without }}")
        inner = src[start + 2 : end]
        trim_left = inner.startswith("-")
        inner = inner[1:] if trim_left else inner
        trim_right = inner.endswith("-")
        body = (inner[:-1] if trim_right else inner).strip()
        text = src[pos:start]
        if trim_next:
            text = text.lstrip()
        if trim_left:
            text = text.rstrip()
        out.append(("text", text))
        if not (body.startswith("/*") and body.endswith("*/")):
            out.append(("action", body))
        trim_next = trim_right
        pos = end + 2
    text = src[pos:]
    out.append(("text", text.lstrip() if trim_next else text))
    return out


def _atoms(expr: str) -> list[str]:
    atoms: list[str] = []
    pos = depth = 0
    expr = expr.rstrip()
    while pos < len(expr):
        m = _ATOM.match(expr, pos)
        if not m:
            raise _fail(f"cannot read {{{{ {expr} }}}}")
        atoms.append(next(g for g in m.groups() if g is not None))
        depth += {"(": 1, ")": -1}.get(atoms[-1], 0)
        if depth > MAX_DEPTH:
            raise _fail(f"nested more than {MAX_DEPTH} levels deep")
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
            if len(stack) > MAX_DEPTH:
                raise _fail(f"nested more than {MAX_DEPTH} levels deep")
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
    def __init__(self, root: Any, max_steps: int, max_output: int) -> None:
        self.root = root
        self.vars: list[dict[str, Any]] = [{"$": root}]
        self.max_steps, self.max_output = max_steps, max_output
        self.steps_left, self.output_left = max_steps, max_output
        self.depth = 0

    def step(self) -> None:
        self.steps_left -= 1
        if self.steps_left < 0:
            raise _over_budget(f"more than {self.max_steps:,} steps")

    def emit(self, out: list[str], text: str) -> None:
        self.output_left -= len(text)
        if self.output_left < 0:
            raise _over_budget(f"more than {self.max_output:,} characters of output")
        out.append(text)

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _fail(f"nested more than {MAX_DEPTH} levels deep")

    def lookup(self, name: str) -> Any:
        for frame in reversed(self.vars):
            if name in frame:
                return frame[name]
        raise _fail(f"undefined variable {name}")


def _operand(atoms: list[str], pos: int, dot: Any, scope: _Scope) -> tuple[Any, int]:
    atom = atoms[pos]
    if atom == "(":
        scope.enter()
        depth, end = 1, pos + 1
        while end < len(atoms) and depth:
            depth += {"(": 1, ")": -1}.get(atoms[end], 0)
            end += 1
        if depth:
            raise _fail("unbalanced parentheses")
        try:
            return _command(atoms[pos + 1 : end - 1], dot, scope), end
        finally:
            scope.depth -= 1
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
    if name[0].isalpha() and name not in ("true", "false", "nil"):
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
        scope.step()
        if isinstance(node, str):
            scope.emit(out, node)
        elif isinstance(node, list):
            if len(node) > 2 and node[0].startswith("$") and node[1] == ":=":
                scope.vars[-1][node[0]] = _command(node[2:], dot, scope)
            else:
                scope.emit(out, _text(_command(node, dot, scope)))
        else:
            scope.enter()
            try:
                _block(node, dot, scope, out)
            finally:
                scope.depth -= 1


def _block(block: _Block, dot: Any, scope: _Scope, out: list[str]) -> None:
    value = _command(block.head, dot, scope)
    scope.vars.append({})
    try:
        if block.kind == "range":
            items = _range_items(value, scope)
            for key, item in items:
                scope.step()
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


def _range_items(value: Any, scope: _Scope) -> list[tuple[Any, Any]]:
    if value is None:
        return []
    if isinstance(value, dict):
        return list(value.items())
    if isinstance(value, (list, tuple)):
        return list(enumerate(value))
    if isinstance(value, int) and not isinstance(value, bool):
        if value > scope.steps_left:
            raise _over_budget(f"more than {scope.max_steps:,} steps")
        return [(i, i) for i in range(max(value, 0))]
    kind = "string" if isinstance(value, str) else type(value).__name__
    raise _fail(f"range can't iterate over a {kind}")


def check_go_template(src: str) -> None:
    """The ``/api/create`` check: ``src`` parses and renders a sample conversation (a
    system prompt and 32 messages of 200 characters) within the budget."""
    messages = [{"Role": "system", "Content": "s" * 200}] + [
        {"Role": ("user", "assistant")[i % 2], "Content": "m" * 200} for i in range(31)
    ]
    sample = {
        "System": "s" * 200,
        "Prompt": "m" * 200,
        "Response": "",
        "Messages": messages,
        "Tools": [],
    }
    render_go_template(src, sample)


def render_go_template(
    src: str,
    values: dict[str, Any],
    *,
    max_steps: int = MAX_STEPS,
    max_output: int = MAX_OUTPUT,
) -> str:
    """Render ``src`` with ``values``; an InvalidRequest (400) if it does not parse,
    uses what the subset lacks, or exceeds the budget."""
    tree = _parse(_tokens(src))
    out: list[str] = []
    try:
        _run(tree.body, values, _Scope(values, max_steps, max_output), out)
    except RecursionError:
        raise _fail(f"nested more than {MAX_DEPTH} levels deep") from None
    return "".join(out)
