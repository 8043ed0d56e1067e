"""Request bodies as JSON: strict parsing with a clear 400 for every way a body can be
wrong, and validation into a wire model. Pure: the server's routes and the Batch API's
lines use the same checks."""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from llmux.errors import InvalidRequest

M = TypeVar("M", bound=BaseModel)


def describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "invalid request: " + "; ".join(parts)


MAX_DEPTH = 100  # nested arrays and objects in a body (JSON schemas nest a few dozen)


def _constant(text: str) -> Any:
    raise InvalidRequest(f"invalid JSON in request body: {text} is not a JSON value")


def _check(data: Any) -> None:
    """Nesting at most MAX_DEPTH deep and every number finite (``1e400`` parses as an
    infinity); iteratively, so no recursion limit applies."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidRequest("invalid JSON in request body: a number is out of range")
        elif isinstance(value, (dict, list)):
            if depth > MAX_DEPTH:
                raise InvalidRequest(
                    f"invalid JSON in request body: nested deeper than {MAX_DEPTH} levels"
                )
            children = value.values() if isinstance(value, dict) else value
            stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list, float)))


def loads(raw: bytes | str) -> Any:
    """Strict JSON for request bodies; every way it can be wrong is an InvalidRequest (400):
    bad syntax or encoding, ``NaN``/``Infinity`` (not JSON), numbers out of range
    (``1e400``, integers of more than 4,300 digits) and nesting deeper than MAX_DEPTH."""
    try:
        data = json.loads(raw, parse_constant=_constant)
    except RecursionError:  # deeper than Python's parser goes
        raise InvalidRequest(
            f"invalid JSON in request body: nested deeper than {MAX_DEPTH} levels"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, too many digits
        raise InvalidRequest(f"invalid JSON in request body: {exc}") from None
    _check(data)
    return data


def validate(model: type[M], data: Any) -> M:
    """``data`` (parsed JSON) as ``model``; a 400 naming the first problems when not."""
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(describe(exc)) from None
