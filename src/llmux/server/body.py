"""Reading JSON request bodies with clear 400s for every way they can be wrong (the
checks themselves are in ``protocols/body.py``, which the Batch API's lines share)."""

from __future__ import annotations

import logging
from typing import TypeVar

from pydantic import BaseModel
from starlette.requests import Request

from llmux.errors import InvalidRequest
from llmux.protocols.body import MAX_DEPTH, describe, loads, validate

__all__ = ["MAX_DEPTH", "describe", "loads", "parse_body"]
log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


async def parse_body(request: Request, model: type[M]) -> M:
    raw = await request.body()
    if not raw.strip():
        raise InvalidRequest("missing request body")
    parsed = validate(model, loads(raw))
    extra = sorted((parsed.model_extra or {}).keys())
    if extra:
        log.info("%s: ignoring unknown fields %s", request.url.path, ", ".join(extra))
    return parsed
