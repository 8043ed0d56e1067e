"""What AccessControl remembers between requests: verified credentials (for
``[auth] cache_s``) and recent failed attempts per client address."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from llmux.core.context import Principal
from llmux.errors import RateLimited

MAX_ENTRIES = 10_000
MAX_ADDRESSES = 100_000


@dataclass(slots=True)
class Cached:
    principal: Principal
    until: float  # monotonic time
    expires_at: float | None  # the credential's own expiry (wall clock)
    owner: str  # the key id, client id, jti or session it came from, to drop on revocation
    csrf: str = ""  # a UI session's CSRF token


class CredentialCache:
    """Verified credentials by fingerprint. ``generation`` counts revocations: a check
    that began before one does not store its (possibly stale) answer."""

    def __init__(self) -> None:
        self.entries: dict[str, Cached] = {}
        self.generation = 0

    def put(self, fingerprint: str, entry: Cached) -> None:
        if len(self.entries) > MAX_ENTRIES:
            self.entries.clear()
        self.entries[fingerprint] = entry

    def _drop(self, gone: list[str]) -> None:
        self.generation += 1
        for fingerprint in gone:
            del self.entries[fingerprint]

    def forget(self, owner: str) -> None:
        """Drop what came from ``owner`` (a key, client, jti or session)."""
        self._drop([f for f, c in self.entries.items() if c.owner == owner])

    def forget_user(self, user_id: str) -> None:
        self._drop([f for f, c in self.entries.items() if c.principal.user_id == user_id])

    def forget_principal(self, principal_id: str) -> None:
        self._drop([f for f, c in self.entries.items() if c.principal.id == principal_id])


class Throttle:
    """Failed authentications per client address in a sliding window: past
    ``max_failures`` within ``window_s`` the address gets 429 until the oldest of them
    leaves the window."""

    def __init__(self, max_failures: int, window_s: float) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}

    def check(self, client: str | None, now: float) -> None:
        recent = self._failures.get(client or "")
        if recent is None:
            return
        while recent and recent[0] <= now - self.window_s:
            recent.popleft()
        if len(recent) >= self.max_failures:
            raise RateLimited(
                "too many failed authentication attempts from this address; try again later",
                retry_after=recent[0] + self.window_s - now,
            )

    def failed(self, client: str | None, now: float) -> None:
        if len(self._failures) > MAX_ADDRESSES:
            self._failures.clear()
        self._failures.setdefault(client or "", deque()).append(now)
