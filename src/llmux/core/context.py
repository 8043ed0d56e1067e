"""Who is asking, through which API and route: the context every operation carries.

The ASGI identity layer (``server/identity.py``) builds one per HTTP request; the Batch
API and other request-free callers build their own. Policies and backends read it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Literal

Api = Literal["ollama", "openai", "deepseek"]
PrincipalKind = Literal["anonymous", "user", "key", "client", "token"]
# who waits for the answer: a person or program now (interactive), or a Batch API line,
# which the engine admits only after every interactive request (engine/batch.py)
Priority = Literal["interactive", "batch"]


def new_request_id() -> str:
    """32 hex digits: the time in milliseconds (12), then 80 random bits (20), as a
    UUIDv7 orders them. Ids made later sort later, so a table keyed by them (the usage
    ledger) appends to its index instead of writing all over it."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: a user (a UI session), one of a user's API keys, an OAuth2 client
    (its token), or a token from an external identity provider. ``anonymous`` while
    access control is off. ``models`` empty means every model; ``user_id`` is the user
    the caller acts for (the key's or client's owner), which owns what it makes."""

    kind: PrincipalKind = "anonymous"
    id: str | None = None
    name: str = "anonymous"
    scopes: frozenset[str] = frozenset()
    models: tuple[str, ...] = ()  # allowed model patterns; empty = all
    user_id: str | None = None

    @property
    def anonymous(self) -> bool:
        return self.kind == "anonymous"

    @property
    def admin(self) -> bool:
        return self.kind == "anonymous" or "admin" in self.scopes


ANONYMOUS = Principal()
# the route prefix of calls llmux makes itself on a request's behalf (a moderation judge):
# their usage is the caller's, but the request's limits were already counted
INTERNAL = "/internal/"


@dataclass(frozen=True, slots=True)
class RequestContext:
    """One request: its id (echoed as ``X-Request-Id``), the API family and route it
    came in on, the client's address and the principal. ``headers`` are response
    headers that policies add (the rate-limit headers); the identity layer sends them
    with the response's start. ``cache_control`` is the request's ``Cache-Control``
    header (the response cache reads it), empty when it sent none.

    ``facts`` are what the layers and policies learned about the request, for the
    metrics, the audit trail and the request log to read at its end: ``body`` (the
    request body as read, bytes), ``redactions`` (entity type -> count), ``moderation``
    (the verdict), ``refused`` (why quotas refused it), ``backend_ttft_s`` (the
    backend's own time to its first item), ``upstream`` (the member that answered),
    ``traceparent`` (the request's W3C trace context header), ``logged`` (the access log
    wrote the request's line).
    ``started`` is when the identity layer made the context (``time.perf_counter()``).
    ``priority`` is ``batch`` for the Batch API's lines, which yield to interactive work."""

    api: Api
    route: str = ""
    request_id: str = field(default_factory=new_request_id)
    client: str | None = None
    principal: Principal = ANONYMOUS
    headers: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    cache_control: str = ""
    facts: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    started: float = field(default_factory=time.perf_counter, compare=False, repr=False)
    priority: Priority = "interactive"

    @property
    def internal(self) -> bool:
        """A call llmux makes for a request (its route starts with :data:`INTERNAL`)."""
        return self.route.startswith(INTERNAL)
