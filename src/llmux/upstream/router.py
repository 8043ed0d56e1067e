"""All configured upstreams: which exposed model names they serve, the pool for a name,
discovery refreshes and health checks. The Gateway owns one :class:`UpstreamRouter`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from llmux.core.names import ModelName
from llmux.errors import InvalidRequest
from llmux.upstream.listing import Listed
from llmux.upstream.pool import LocalMember, Pool, Target
from llmux.upstream.server import Upstream
from llmux.upstream.settings import UpstreamSettings

log = logging.getLogger(__name__)
STARTUP_DISCOVERY_S = 5.0


def lookup_keys(name: str) -> list[str]:
    """The keys a name is found under: as written (lower case) and its canonical form."""
    keys = [name.strip().lower()]
    with contextlib.suppress(InvalidRequest):
        display = ModelName.parse(name).display
        if display not in keys:
            keys.append(display)
    return keys


class UpstreamRouter:
    def __init__(self, settings: list[UpstreamSettings]) -> None:
        self.upstreams = {s.name: Upstream(s) for s in settings}
        self._index: dict[str, str] = {}
        self._targets: dict[str, list[tuple[Upstream, str]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.rebuild()

    def rebuild(self) -> None:
        index: dict[str, str] = {}
        targets: dict[str, list[tuple[Upstream, str]]] = {}
        for up in self.upstreams.values():
            for exposed, remote in up.models().items():
                key = exposed.strip()
                targets.setdefault(key, []).append((up, remote))
                for k in lookup_keys(key):
                    index.setdefault(k, key)
        self._index, self._targets = index, targets

    def lookup(self, name: str) -> str | None:
        """The exposed name an upstream serves under ``name``, if any."""
        for key in lookup_keys(name):
            hit = self._index.get(key)
            if hit is not None:
                return hit
        return None

    def targets(self, exposed: str) -> list[tuple[Upstream, str]]:
        return self._targets.get(exposed, [])

    def pool(self, exposed: str, local: LocalMember | None) -> Pool:
        targets: list[Target] = list(self.targets(exposed))
        return Pool(exposed, targets, local)

    def listed(self) -> list[Listed]:
        return [
            Listed(name, up, remote)
            for name, members in self._targets.items()
            for up, remote in members
        ]

    # -- background work --------------------------------------------------------------

    async def start(self) -> None:
        """Discover models once (bounded), then refresh and health-check in the background."""
        if not self.upstreams:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STARTUP_DISCOVERY_S):
                await asyncio.gather(*(u.refresh() for u in self.upstreams.values()))
        self.rebuild()
        for up in self.upstreams.values():
            interval = up.settings.health_interval_s
            if up.static is None and up.settings.refresh_s:
                interval = min(interval or up.settings.refresh_s, up.settings.refresh_s)
            if interval:
                self._tasks.append(asyncio.create_task(self._every(interval, up.refresh)))

    async def _every(self, interval: float, work: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await work()
                self.rebuild()
            except Exception:  # a check must never kill the loop
                log.exception("upstream check failed")

    def snapshot(self) -> list[dict[str, Any]]:
        return [u.snapshot() for u in self.upstreams.values()]

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for up in self.upstreams.values():
            await up.aclose()
