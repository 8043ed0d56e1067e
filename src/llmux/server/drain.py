"""Graceful drain: what ``llmux serve`` does with SIGTERM (docs/observability.md).

:class:`Drain` is the state, one per app (``app.state.drain``). :class:`DrainLayer` is
the pure-ASGI layer just inside the error boundary: it counts the requests in flight
and, once the drain has begun, refuses new ones with 503, ``Retry-After`` and
``Connection: close`` in the caller's API shape (the boundary writes it), on new
connections and on open keep-alive ones alike. ``/healthz``, ``/readyz`` and
``/metrics`` are never refused: the probes and the scrape see the drain.
:class:`DrainingServer` is uvicorn's server with the signals taken over:

1. the first SIGTERM (or SIGINT) begins the drain; the socket stays open, ``/readyz``
   answers 503, running requests and streams go on;
2. when none is left, or ``[server] drain_s`` has passed, uvicorn's own shutdown runs:
   the socket closes, then the lifespan's (``Services.aclose``: usage, audit and batch
   state written, the Batch API's lease handed back), and the process exits 0;
3. requests still running when the grace period ends are cut: a stream ends with its
   API's error line or event, a reply not started yet is a 503;
4. a second signal cuts them at once; a third skips the rest of the shutdown.

The signal handler only sets flags; uvicorn's tick (every 0.1 s, on the loop) does the
work: :meth:`Drain.tick`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from types import FrameType

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from llmux.errors import ServerBusy

log = logging.getLogger(__name__)
NEVER_REFUSED = frozenset(("/healthz", "/readyz", "/metrics"))
REFUSED = "this server is shutting down; send the request again (another replica answers it)"
CUT = "this server is shutting down and its grace period for running requests is over; send the request again"  # fmt: skip
AFTER_CUT_S = 5.0  # the most a cut request may take to end before uvicorn's shutdown runs


class Drain:
    """Whether the server drains, what runs, and when to stop waiting for it."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.draining = False
        self.hurry = False  # a second signal: cut what runs now
        self.active: set[asyncio.Task[object]] = set()
        self.cut: set[asyncio.Task[object]] = set()
        self.refused = 0
        self._since = 0.0
        self._cut_at = 0.0
        self._announced = False
        self._running_at_start = 0

    def begin(self) -> None:
        """The drain starts (called from a signal handler: flags only)."""
        if not self.draining:
            self._since = time.monotonic()
            self.draining = True

    def refusal(self) -> ServerBusy:
        self.refused += 1
        error = ServerBusy(REFUSED, retry_after=1.0)
        error.headers["Connection"] = "close"  # the client's next try opens a new one
        return error

    def tick(self) -> bool:
        """One step of the drain, on the loop; True when the server may shut down."""
        if not self.draining:
            return False
        now = time.monotonic()
        if not self._announced:
            self._announced = True
            self._running_at_start = len(self.active)
            log.info(
                "draining: %d request(s) in flight, waiting up to %.0f s for them; new "
                "requests get 503",
                self._running_at_start,
                self.grace_s,
            )
        if not self.active:
            log.info(
                "drained: %d request(s) finished, %d cut, %d refused during the drain",
                self._running_at_start - len(self.cut),
                len(self.cut),
                self.refused,
            )
            return True
        if not self.cut and (self.hurry or now - self._since >= self.grace_s):
            self._cut_at = now
            self.cut = set(self.active)
            why = "a second signal" if self.hurry else f"the grace period ({self.grace_s:.0f} s)"
            log.warning("drain: %s ended it; cutting %d request(s)", why, len(self.cut))
            for task in self.cut:
                task.cancel(msg="drain")
        if self.cut and now - self._cut_at >= AFTER_CUT_S:
            log.warning("drain: %d request(s) did not end when cut", len(self.active))
            return True
        return False

    def was_cut(self, task: asyncio.Task[object] | None) -> bool:
        return task is not None and task in self.cut


class DrainLayer:
    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or scope.get("path") in NEVER_REFUSED:
            await self.app(scope, receive, send)
            return
        drain = self.drain
        if scope["type"] == "websocket":  # its turns are counted (routes/websocket.py)
            if drain.draining:  # refused before it is accepted: a 403 to the handshake
                drain.refused += 1
                if (await receive())["type"] == "websocket.connect":
                    await send({"type": "websocket.close", "code": 1013})
                return
            await self.app(scope, receive, send)
            return
        if drain.draining:
            raise drain.refusal()
        task: asyncio.Task[object] | None = asyncio.current_task()
        assert task is not None
        drain.active.add(task)
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            if not drain.was_cut(task):
                raise
            task.uncancel()
            raise ServerBusy(CUT, retry_after=1.0) from None
        finally:
            drain.active.discard(task)


class DrainingServer(uvicorn.Server):
    """uvicorn's server, with SIGTERM and SIGINT beginning a drain (see the module)."""

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self.drain = drain

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig not in (signal.SIGTERM, signal.SIGINT):
            super().handle_exit(sig, frame)
        elif not self.drain.draining:
            self.drain.begin()
        elif not self.drain.hurry:
            self.drain.hurry = True
        else:  # a third: uvicorn stops waiting, and skips the lifespan's shutdown
            self.should_exit = self.force_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self.drain.tick():
            self.should_exit = True
        return await super().on_tick(counter)
