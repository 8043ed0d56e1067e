"""The response cache's key: SHA-256 over a canonical form of everything that can
change a reply.

What goes in, in order: :data:`VERSION` (a new one retires every stored entry), the
tenant (the principal's kind and id, and the user it acts for), the API and route, the
operation's kind and resolved model, what serves it (:meth:`llmux.gateway.Gateway.served_by`:
the local model's digest, or the upstreams and their model names) and every request of
the operation.

A request's canonical form is built from its dataclass fields (``dataclasses.fields``),
recursively, so a field added to :class:`~llmux.core.request.ChatRequest`,
:class:`~llmux.core.request.Sampling` or any value inside it is in the key without a
change here; only the fields in :data:`EXCLUDED` are left out (``keep_alive``: how long
the model stays loaded does not change the reply). Every value carries its type and
length, so ``None`` differs from ``0``, ``""`` and ``()``, ``1`` from ``1.0`` and
``True``, and no two sequences run together. Dict keys are sorted (a JSON Schema in
``format`` or a tool's ``parameters`` keyed the same whatever their order); bytes
(images) are hashed. The stream mode is not in the key: a streamed and a JSON request
share one entry.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from llmux.core.context import RequestContext
from llmux.policies import Operation

VERSION = "llmux-cache-1"
EXCLUDED: frozenset[tuple[str, str]] = frozenset({("ChatRequest", "keep_alive")})
LARGE_BYTES = 256 * 1024  # requests carrying more image bytes than this are keyed off the loop


class KeyMaker:
    """Canonical forms and keys; remembers each dataclass type's field names."""

    def __init__(self, version: str = VERSION) -> None:
        self.version = version
        self._fields: dict[type, tuple[str, ...]] = {}

    def key(self, ctx: RequestContext, op: Operation, served_by: str) -> str:
        """The hex SHA-256 of the operation as ``ctx``'s tenant asks it."""
        p = ctx.principal
        out: list[str] = []
        for part in (self.version, p.kind, p.id, p.user_id, ctx.api, ctx.route, op.kind):
            self._emit(part, out)
        self._emit(op.model, out)
        self._emit(served_by, out)
        self._emit(op.requests, out)
        self._emit(op.embed, out)
        text = "".join(out).encode("utf-8", "surrogatepass")
        return hashlib.sha256(text).hexdigest()

    def canonical(self, value: Any) -> str:
        """The canonical form of one value (what :meth:`key` hashes, part by part)."""
        out: list[str] = []
        self._emit(value, out)
        return "".join(out)

    def _emit(self, v: Any, out: list[str]) -> None:
        t = type(v)
        if v is None:
            out.append("N")
        elif t is str:
            out.append(f"s{len(v)}:")
            out.append(v)
        elif t is bool:
            out.append("T" if v else "F")
        elif t is int:
            out.append(f"i{v};")
        elif t is float:
            out.append(f"f{v!r};")
        elif t is tuple or t is list:
            out.append(f"[{len(v)}:")
            for item in v:
                self._emit(item, out)
            out.append("]")
        elif t is dict:
            self._emit_dict(v, out)
        elif t is bytes or t is bytearray:
            out.append(f"b{len(v)}:{hashlib.sha256(v).hexdigest()};")
        elif dataclasses.is_dataclass(v) and not isinstance(v, type):
            self._emit_dataclass(v, out)
        else:
            self._emit_other(v, out)

    def _emit_dict(self, v: dict[Any, Any], out: list[str]) -> None:
        pairs = sorted((self.canonical(k), self.canonical(item)) for k, item in v.items())
        out.append(f"{{{len(pairs)}:")
        for k, item in pairs:
            out.append(k)
            out.append(item)
        out.append("}")

    def _emit_dataclass(self, v: Any, out: list[str]) -> None:
        t = type(v)
        names = self._fields.get(t)
        if names is None:
            names = tuple(
                f.name for f in dataclasses.fields(v) if (t.__name__, f.name) not in EXCLUDED
            )
            self._fields[t] = names
        out.append(f"<{t.__name__}:")
        for name in names:
            x = getattr(v, name)
            if x is None:  # most fields: inline, as _emit would spell them
                out.append(f"{name}=N")
            elif type(x) is str:
                out.append(f"{name}=s{len(x)}:")
                out.append(x)
            elif type(x) is tuple and not x:
                out.append(f"{name}=[0:]")
            else:
                out.append(f"{name}=")
                self._emit(x, out)
        out.append(">")

    def _emit_other(self, v: Any, out: list[str]) -> None:
        """Subclasses of the plain types (an enum, a str subclass) as their base value;
        anything else has no stable form, so it cannot be keyed."""
        base: type[Any]
        for base in (bool, int, float, str, bytes, tuple, list, dict):
            if isinstance(v, base):
                self._emit(base(v), out)
                return
        raise TypeError(f"the response cache cannot key a {type(v).__name__} value")


def image_bytes(op: Operation) -> int:
    """How many image bytes the operation's requests carry (hashing many is slow)."""
    return sum(len(image) for r in op.requests for image in r.all_images)
