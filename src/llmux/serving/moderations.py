"""``POST /v1/moderations`` (and ``/v1/moderation``): texts classified by the configured
moderator, answered in OpenAI's shape. Request-free, so the Batch API can call it."""

from __future__ import annotations

from typing import Any

from llmux.core.context import RequestContext, new_request_id
from llmux.policies.moderation import ListModerator, Verdict
from llmux.protocols.openai.wire import ModerationBody

MODEL = "llmux-moderation"


def texts(body: ModerationBody) -> list[str]:
    """One text per result: each string, or the text parts of one input joined."""
    if isinstance(body.input, str):
        return [body.input]
    if all(isinstance(item, str) for item in body.input):
        return [str(item) for item in body.input]
    parts = [p for p in body.input if not isinstance(p, str)]
    return ["\n".join(p.text for p in parts if p.type == "text" and p.text)]


def result(verdict: Verdict, categories: tuple[str, ...]) -> dict[str, Any]:
    return {
        "flagged": verdict.flagged,
        "categories": {c: c in verdict.categories for c in categories},
        "category_scores": {c: 1.0 if c in verdict.categories else 0.0 for c in categories},
        "category_applied_input_types": {c: ["text"] for c in categories},
    }


async def moderate(
    ctx: RequestContext, moderator: ListModerator, body: ModerationBody
) -> dict[str, Any]:
    verdicts = [await moderator.classify(ctx, t) for t in texts(body)]
    return {
        "id": f"modr-{new_request_id()}",
        "model": body.model or MODEL,
        "results": [result(v, moderator.categories) for v in verdicts],
    }
