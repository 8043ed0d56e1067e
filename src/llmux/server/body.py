"""Reading JSON request bodies with clear 400s for every way they can be wrong."""

from __future__ import annotations

import json
import logging
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from llmux.errors import InvalidRequest

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


def describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "invalid request: " + "; ".join(parts)


async def parse_body(request: Request, model: type[M]) -> M:
    raw = await request.body()
    if not raw.strip():
        raise InvalidRequest("missing request body")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"invalid JSON in request body: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(describe(exc)) from None
    extra = sorted((parsed.model_extra or {}).keys())
    if extra:
        log.info("%s: ignoring unknown fields %s", request.url.path, ", ".join(extra))
    return parsed
