"""OAuth2 client credentials for the SDK: an ``httpx.Auth`` that fetches an access token
from the server's ``/oauth2/token`` (Basic ``client_id:client_secret``, RFC 6749 section
4.4), keeps it, and fetches a new one :data:`REFRESH_BEFORE_S` (10 minutes) before it
expires, or once when the server answers 401 to a token it had (revoked, or the server
secret changed). Sync and async clients share the logic; each has its own lock, so
concurrent requests fetch one token, not many."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, Generator
from typing import Any
from urllib.parse import quote_plus

import httpx

from llmux.client.errors import AuthenticationError

REFRESH_BEFORE_S = 600.0


class ClientCredentials(httpx.Auth):
    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        scope: str | None = None,
        refresh_before_s: float = REFRESH_BEFORE_S,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._secret = client_secret
        self.scope = scope
        self.refresh_before_s = refresh_before_s
        self.token: str | None = None
        self.expires_at = 0.0
        self.fetched = 0  # how many tokens were fetched (for tests and diagnostics)
        self._thread_lock = threading.Lock()
        self._async_lock: asyncio.Lock | None = None

    def __repr__(self) -> str:  # never the secret
        return f"ClientCredentials({self.client_id!r})"

    def fresh(self) -> bool:
        return self.token is not None and time.time() < self.expires_at - self.refresh_before_s

    def token_request(self) -> httpx.Request:
        pair = f"{quote_plus(self.client_id)}:{quote_plus(self._secret)}"
        data = {"grant_type": "client_credentials"}
        if self.scope:
            data["scope"] = self.scope
        return httpx.Request(
            "POST",
            self.token_url,
            data=data,
            headers={"Authorization": "Basic " + _b64(pair), "Accept": "application/json"},
        )

    def take(self, response: httpx.Response) -> None:
        try:
            body: Any = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
            detail = (
                body.get("error_description") or body.get("error")
                if isinstance(body, dict)
                else None
            )
            raise AuthenticationError(
                f"the token endpoint refused client {self.client_id!r}: "
                f"{detail or response.status_code}",
                status_code=response.status_code,
            )
        self.token = str(body["access_token"])
        self.expires_at = time.time() + float(body.get("expires_in") or 3600)
        self.fetched += 1

    def _with_token(self, request: httpx.Request) -> httpx.Request:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        for attempt in range(2):
            with self._thread_lock:
                if attempt or not self.fresh():
                    response = yield self.token_request()
                    response.read()
                    self.take(response)
            response = yield self._with_token(request)
            if response.status_code != 401 or attempt:
                return
            response.read()  # a 401 to a token we had: fetch a new one, once

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if self._async_lock is None:
            self._async_lock = asyncio.Lock()
        for attempt in range(2):
            async with self._async_lock:
                if attempt or not self.fresh():
                    response = yield self.token_request()
                    await response.aread()
                    self.take(response)
            response = yield self._with_token(request)
            if response.status_code != 401 or attempt:
                return
            await response.aread()


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()
