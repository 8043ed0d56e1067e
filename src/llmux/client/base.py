"""What the sync and async clients share: settings, request building, answer reading."""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from typing import Any, TypeVar

import httpx

from llmux import __version__
from llmux.client.calls import Call
from llmux.client.errors import decode_json, decode_line, raise_for_status
from llmux.client.host import base_url
from llmux.client.oauth import ClientCredentials
from llmux.client.resilience import Attempts, CircuitBreaker, RetryPolicy

T = TypeVar("T")

DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 600.0


class ClientBase:
    """Settings common to :class:`~llmux.Client` and :class:`~llmux.AsyncClient`.

    ``host``: ``host:port``, ``:port`` or a URL; default ``LLMUX_HOST``, else
    ``127.0.0.1:11434``. ``connect_timeout``/``read_timeout`` in seconds (``None``: no
    limit; ``read_timeout`` is the longest wait for the next bytes, so a stream may run
    longer). ``retry``: a :class:`RetryPolicy`, or ``False`` for one try only. ``breaker``:
    a :class:`CircuitBreaker` (share one between clients to share its state), or ``False``.
    ``api_key`` is sent as a bearer token (default ``LLMUX_API_KEY``). Or, with
    ``client_id`` and ``client_secret`` (defaults ``LLMUX_CLIENT_ID``,
    ``LLMUX_CLIENT_SECRET``), the client gets an OAuth2 token from the server's
    ``/oauth2/token`` itself and renews it 10 minutes before it expires (``scope``
    narrows it). Other keywords (``transport``, ``verify``, ``proxy``, ...) go to the
    underlying httpx client.
    """

    def __init__(
        self,
        host: str | None = None,
        *,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float | None = DEFAULT_READ_TIMEOUT,
        retry: RetryPolicy | bool = True,
        breaker: CircuitBreaker | bool = True,
        headers: Mapping[str, str] | None = None,
        api_key: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        scope: str | None = None,
        **httpx_options: Any,
    ) -> None:
        self.base_url = base_url(host)
        self.timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        if isinstance(retry, RetryPolicy):
            self.retry = retry
        else:
            self.retry = RetryPolicy() if retry else RetryPolicy(max_attempts=1)
        if isinstance(breaker, CircuitBreaker):
            self.breaker: CircuitBreaker | None = breaker
        else:
            self.breaker = CircuitBreaker() if breaker else None
        self.headers = {
            "Accept": "application/json",
            "User-Agent": f"llmux-python/{__version__}",
            **(headers or {}),
        }
        api_key = api_key if api_key is not None else os.environ.get("LLMUX_API_KEY")
        client_id = client_id or os.environ.get("LLMUX_CLIENT_ID")
        client_secret = client_secret or os.environ.get("LLMUX_CLIENT_SECRET")
        self.credentials: ClientCredentials | None = None
        if client_id and client_secret and not api_key:
            self.credentials = ClientCredentials(
                self.base_url + "/oauth2/token", client_id, client_secret, scope=scope
            )
            httpx_options.setdefault("auth", self.credentials)
        elif (client_id or client_secret) and not api_key:
            raise ValueError("OAuth2 client credentials need both client_id and client_secret")
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self._rng = random.Random()
        self._setup(httpx_options)

    def _setup(self, httpx_options: dict[str, Any]) -> None:
        """Build the httpx client and the namespaces (in each twin)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    def _build(self, call: Call[Any]) -> httpx.Request:
        return httpx.Request(
            call.method,
            self.base_url + call.path,
            params=call.params,
            json=call.json,
            files=call.files,
            data=call.data,
            headers=self.headers,
        )

    def _attempts(self) -> Attempts:
        return Attempts(self.retry, self.breaker, self.base_url, self._rng)


def finish(call: Call[T], response: httpx.Response) -> T:
    """The typed result of a whole (already read) answer."""
    if call.text:
        raise_for_status(response)
        return call.parse(response.text)
    return call.parse(decode_json(response))


def parse_line(call: Call[T], line: str) -> T | None:
    """One streamed line as a typed chunk (``None`` for a blank line)."""
    obj = decode_line(line)
    return None if obj is None else call.parse(obj)
