"""Access control on real ``llmux serve`` processes: two replicas sharing one PostgreSQL
database and one server secret. The official clients, curl and the brief's own
snippets (OAuth2 with requests and Basic auth; a PyJWT token signed by the client)
get through with valid credentials and are refused with wrong or revoked ones; a key
revoked on one replica is refused by the other within [auth] cache_s (1 s)."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import ollama
import openai
import pytest
import requests
from requests.auth import HTTPBasicAuth

from tests.conftest import MODEL, Server, fresh_pg_database, start_server

PROMPT = [{"role": "user", "content": "Say hi."}]


@pytest.fixture(scope="module")
def shared_pg() -> Iterator[str]:
    yield from fresh_pg_database("llmux_auth")


@pytest.fixture(scope="module")
def env(shared_pg: str) -> dict[str, str]:
    return {
        "LLMUX_STORAGE__DATABASE_URL": shared_pg,
        "LLMUX_AUTH__MODE": "on",
        "LLMUX_AUTH__SECRET": secrets.token_urlsafe(32),
        "LLMUX_AUTH__ADMIN_PASSWORD": "replica admin password",
    }


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]
) -> Iterator[tuple[Server, Server]]:
    a = start_server(tmp_path_factory.mktemp("replica-a"), extra_env=env)
    b = start_server(tmp_path_factory.mktemp("replica-b"), extra_env=env)
    yield a, b
    a.stop()
    b.stop()


def cli(server: Server, *args: str) -> str:
    """``llmux ...`` on the server's machine (the same database and secret)."""
    done = subprocess.run(
        [sys.executable, "-m", "llmux", *args], env=server.env, capture_output=True,
        text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def admin_key(replicas: tuple[Server, Server]) -> str:
    return cli(replicas[0], "keys", "create", "--user", "admin", "--name", "ops",
               "--scopes", "inference models:read models:write admin")  # fmt: skip


def test_the_official_clients_and_curl(replicas: tuple[Server, Server], admin_key: str) -> None:
    a, b = replicas
    key = cli(a, "keys", "create", "--user", "admin", "--scopes", "inference models:read")
    assert key.startswith("sk-llmux-")
    client = openai.OpenAI(base_url=f"{a.url}/v1", api_key=key, max_retries=0)
    reply = client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=8)  # type: ignore[arg-type]
    assert reply.choices[0].message.content is not None
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{a.url}/v1", api_key="sk-llmux-000000000000_" + "x" * 43,
                      max_retries=0).models.list()  # fmt: skip
    local = ollama.Client(host=b.url, headers={"Authorization": f"Bearer {key}"})
    assert MODEL in [m.model for m in local.list().models]
    with pytest.raises(ollama.ResponseError) as refused:
        ollama.Client(host=b.url, headers={"Authorization": "Bearer wrong"}).list()
    assert refused.value.status_code == 401

    def curl(k: str) -> str:
        return subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", f"x-api-key: {k}",
             f"{b.url}/api/tags"], capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip

    assert curl(key) == "200" and curl(key + "x") == "401"


def get_access_token(base: str, client_id: str, client_secret: str) -> str:
    """The brief's snippet: client credentials with requests and Basic auth."""
    response = requests.post(
        f"{base}/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=HTTPBasicAuth(client_id, client_secret),
        timeout=30,
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


def generate_token(client_id: str, client_secret: str) -> str:
    """The brief's other snippet: a JWT the client signs itself with PyJWT."""
    now = int(time.time())
    payload = {"iss": client_id, "iat": now, "exp": now + 24 * 3600}
    return jwt.encode(payload, client_secret, algorithm="HS256")


def test_the_briefs_oauth2_and_jwt_snippets(
    replicas: tuple[Server, Server], admin_key: str
) -> None:
    a, b = replicas
    r = httpx.post(f"{a.url}/admin/clients", json={"user": "admin", "scopes": ["inference"]},
                   headers={"Authorization": f"Bearer {admin_key}"})  # fmt: skip
    assert r.status_code == 201, r.text
    client_id, client_secret = r.json()["client_id"], r.json()["client_secret"]
    for token in (get_access_token(a.url, client_id, client_secret),
                  generate_token(client_id, client_secret)):  # fmt: skip
        chat = openai.OpenAI(base_url=f"{b.url}/v1", api_key=token, max_retries=0)
        reply = chat.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=4)  # type: ignore[arg-type]
        assert reply.usage is not None and reply.usage.completion_tokens >= 1
    with pytest.raises(requests.HTTPError) as refused:
        get_access_token(a.url, client_id, client_secret + "x")
    assert refused.value.response.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{b.url}/v1", api_key=generate_token(client_id, "y" * 43),
                      max_retries=0).models.list()  # fmt: skip


def test_a_key_revoked_on_one_replica_is_refused_by_the_other_within_a_second(
    replicas: tuple[Server, Server], admin_key: str
) -> None:
    a, b = replicas
    key = cli(a, "keys", "create", "--user", "admin", "--scopes", "models:read")
    key_id = key.removeprefix("sk-llmux-").split("_")[0]
    h = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{b.url}/api/tags", headers=h).status_code == 200  # cached on b now
    r = httpx.delete(
        f"{a.url}/admin/keys/{key_id}", headers={"Authorization": f"Bearer {admin_key}"}
    )
    assert r.status_code == 204
    revoked_at = time.monotonic()
    assert httpx.get(f"{a.url}/api/tags", headers=h).status_code == 401  # at once where revoked
    time.sleep(max(0.0, revoked_at + 1.0 - time.monotonic()))
    assert httpx.get(f"{b.url}/api/tags", headers=h).status_code == 401


def test_no_credential_reaches_the_logs(replicas: tuple[Server, Server], admin_key: str) -> None:
    a, b = replicas
    for server in (a, b):
        text = server.log.read_text()
        assert admin_key not in text and admin_key.split("_")[-1] not in text
        assert "replica admin password" not in text
        assert Path(server.home, "auth-secret").exists() is False  # the configured one is used
