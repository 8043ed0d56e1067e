"""The SDK with OAuth2 client credentials, against a real server with access control
on: it fetches a token from /oauth2/token, keeps it, renews it 10 minutes before it
expires, and once more after a 401 to a token it had (revoked); a refused client is an
AuthenticationError. Sync and async."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from llmux.client import AsyncClient, AuthenticationError, Client
from tests.conftest import Server, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "LLMUX_AUTH__MODE": "on",
        "LLMUX_AUTH__SECRET": secrets.token_urlsafe(32),
        "LLMUX_AUTH__ADMIN_PASSWORD": "sdk admin password",
    }
    srv = start_server(tmp_path_factory.mktemp("sdk-auth"), extra_env=env)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def admin(server: Server) -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "llmux", "keys", "create", "--user", "admin", "--scopes",
         "admin models:read"], env=server.env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return {"Authorization": "Bearer " + done.stdout.strip().splitlines()[-1]}


def new_client(server: Server, admin: dict[str, str]) -> dict[str, Any]:
    body = {"user": "admin", "scopes": ["models:read"]}
    r = httpx.post(f"{server.url}/admin/clients", json=body, headers=admin)
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_the_sdk_gets_keeps_and_renews_its_token(server: Server, admin: dict[str, str]) -> None:
    made = new_client(server, admin)
    with Client(server.url, client_id=made["client_id"], client_secret=made["client_secret"],
                retry=False) as client:  # fmt: skip
        creds = client.credentials
        assert creds is not None
        assert client.list().models and creds.fetched == 1
        client.list()
        assert creds.fetched == 1  # kept
        first = creds.token
        creds.expires_at = time.time() + 500  # inside the 10-minute margin
        client.list()
        assert creds.fetched == 2 and creds.token != first
        r = httpx.post(f"{server.url}/admin/tokens/revoke", json={"token": creds.token},
                       headers=admin)  # fmt: skip
        assert r.status_code == 204
        client.list()  # a 401 to the revoked token, a new token, the call once more
        assert creds.fetched == 3
        assert made["client_secret"] not in repr(creds)


def test_the_async_client_too(server: Server, admin: dict[str, str]) -> None:
    made = new_client(server, admin)

    async def go() -> int:
        async with AsyncClient(server.url, client_id=made["client_id"],
                               client_secret=made["client_secret"]) as client:  # fmt: skip
            results = await asyncio.gather(*(client.list() for _ in range(8)))
            assert all(r.models for r in results)
            assert client.credentials is not None
            return client.credentials.fetched

    assert asyncio.run(go()) == 1  # eight calls at once, one token


def test_a_refused_client_is_an_authentication_error(server: Server, admin: dict[str, str]) -> None:
    made = new_client(server, admin)
    with pytest.raises(AuthenticationError) as refused:
        Client(server.url, client_id=made["client_id"], client_secret="wrong" * 9,
               retry=False).list()  # fmt: skip
    assert refused.value.status_code == 401 and made["client_id"] in str(refused.value)
    with pytest.raises(AuthenticationError):
        Client(server.url, api_key="sk-llmux-nope", retry=False).list()
    with pytest.raises(ValueError):
        Client(server.url, client_id="only-an-id")
