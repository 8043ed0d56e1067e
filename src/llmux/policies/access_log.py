"""A metadata-only policy: one log line per model operation, at its end.

``[server] access_log = true`` turns it on. The line carries the request id (from the
log record), API, route, operation, model, backend (``relay`` for the fast path),
outcome, token counts, time to first item and latency, the client address and the
principal; never a prompt, a reply or a credential.
"""

from __future__ import annotations

import logging

from llmux.core.context import RequestContext
from llmux.policies import Operation, Outcome, PassThrough

log = logging.getLogger("llmux.access")


def status_of(outcome: Outcome) -> str:
    if outcome.error is not None:
        return f"error:{outcome.error.status}:{outcome.error.code}"
    return "cancelled" if outcome.cancelled else "ok"


class AccessLog(PassThrough):
    needs_body = False

    def finished(self, ctx: RequestContext, op: Operation, outcome: Outcome) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        u = outcome.usage
        ttft = "-" if outcome.ttft_s is None else f"{outcome.ttft_s * 1000:.1f}"
        log.info(
            "%s %s %s model=%s backend=%s stream=%s status=%s prompt=%d completion=%d"
            " cached=%d ttft_ms=%s latency_ms=%.1f client=%s principal=%s",
            ctx.api,
            ctx.route,
            op.kind,
            op.model,
            op.backend,
            "yes" if op.stream else "no",
            status_of(outcome),
            u.prompt_tokens,
            u.completion_tokens,
            u.cached_tokens,
            ttft,
            outcome.latency_s * 1000,
            ctx.client or "-",
            ctx.principal.name,
        )
