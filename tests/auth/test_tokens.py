"""OAuth2 client credentials (RFC 6749 section 4.4 and the errors of section 5.2) and
JWTs: llmux's own, client-signed HS256, an external provider's RS256; ``alg: none``,
HS/RS confusion, short secrets, expiry, ``nbf``, ``iss``/``aud``, leeway, revocation."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from llmux.storage.principals import ClientRow
from tests.auth.test_access import bearer, call, make_user
from tests.support.inprocess import App, in_process

IDP = "https://idp.example.test"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture
def app(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> Iterator[App]:
    pem = tmp_path / "idp.pem"
    pem.write_bytes(public_pem(rsa_key))
    issuer = {"issuer": IDP, "audience": "llmux-api", "public_key_file": str(pem)}
    auth = {"mode": "on", "max_failures": 1000, "issuers": [issuer]}
    with in_process(tmp_path, auth=auth) as app:
        yield app


def new_client(app: App, **kwargs: Any) -> tuple[ClientRow, str]:
    owner = make_user(app, f"owner-{time.monotonic_ns()}")
    row, secret = call(app, app.access.create_client, owner, **kwargs)
    return row, secret


def basic(client_id: str, secret: str) -> dict[str, str]:
    pair = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode(), **FORM}


def token_request(app: App, data: str, headers: dict[str, str] | None = None) -> Any:
    return app.client.post("/oauth2/token", content=data, headers={**FORM, **(headers or {})})


# ---- the token endpoint ------------------------------------------------------------------


def test_client_credentials_with_basic_and_with_the_body(app: App) -> None:
    row, secret = new_client(app)
    r = token_request(app, "grant_type=client_credentials", basic(row.id, secret))
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 7200
    assert set(body["scope"].split()) == set(row.scopes)
    assert app.client.get("/api/tags", headers=bearer(body["access_token"])).status_code == 200
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["client_id"] == claims["sub"] == row.id and claims["exp"] - claims["iat"] == 7200
    data = f"grant_type=client_credentials&client_id={row.id}&client_secret={quote_plus(secret)}"
    assert token_request(app, data).status_code == 200


def test_requested_scopes_are_narrowed_to_the_clients(app: App) -> None:
    row, secret = new_client(app, scopes=frozenset({"inference"}))
    r = token_request(app, "grant_type=client_credentials&scope=inference", basic(row.id, secret))
    assert r.status_code == 200 and r.json()["scope"] == "inference"
    token = r.json()["access_token"]
    assert app.client.get("/api/tags", headers=bearer(token)).status_code == 403
    r = token_request(
        app, "grant_type=client_credentials&scope=models:write", basic(row.id, secret)
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"


@pytest.mark.parametrize(
    ("data", "auth", "error", "status"),
    [
        ("", "basic", "invalid_request", 400),  # no grant_type
        ("grant_type=client_credentials&grant_type=client_credentials", "basic", "invalid_request", 400),
        ("grant_type=client_credentials&client_id=ID", "basic", "invalid_request", 400),  # two ways
        ("grant_type=password&username=a&password=b", "basic", "unsupported_grant_type", 400),
        ("grant_type=client_credentials", "wrong", "invalid_client", 401),
        ("grant_type=client_credentials", "none", "invalid_client", 401),
        ("grant_type=client_credentials&scope=flying", "basic", "invalid_scope", 400),
    ],
)  # fmt: skip
def test_rfc6749_section_5_2_errors(
    app: App, data: str, auth: str, error: str, status: int
) -> None:
    row, secret = new_client(app)
    headers = {"basic": basic(row.id, secret), "wrong": basic(row.id, secret + "x"), "none": {}}[
        auth
    ]
    r = token_request(app, data.replace("ID", row.id), headers)
    assert r.status_code == status and r.json()["error"] == error, r.text
    assert r.json()["error_description"] and r.headers["cache-control"] == "no-store"
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Basic")
    assert secret not in r.text


def test_the_form_must_be_form_encoded(app: App) -> None:
    row, secret = new_client(app)
    headers = {**basic(row.id, secret), "Content-Type": "application/json"}
    r = app.client.post("/oauth2/token", json={"grant_type": "client_credentials"}, headers=headers)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


def test_a_revoked_client_gets_no_token_and_its_tokens_stop(app: App) -> None:
    row, secret = new_client(app)
    token = token_request(app, "grant_type=client_credentials", basic(row.id, secret)).json()
    call(app, app.access.revoke_client, row.id)
    r = app.client.get("/api/tags", headers=bearer(token["access_token"]))
    assert r.status_code == 401
    r = token_request(app, "grant_type=client_credentials", basic(row.id, secret))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


# ---- client-signed tokens (the brief's generate_token) -------------------------------------


def generate_token(client_id: str, client_secret: str, **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": client_id, "iat": now, "exp": now + 24 * 3600, **claims}
    return jwt.encode(payload, client_secret, algorithm="HS256")


def test_a_client_signed_hs256_token(app: App) -> None:
    row, secret = new_client(app)
    token = generate_token(row.id, secret)
    assert app.client.get("/api/tags", headers=bearer(token)).status_code == 200
    wrong = generate_token(row.id, secret[::-1])
    r = app.client.get("/api/tags", headers=bearer(wrong))
    assert r.status_code == 401 and "signature" in r.json()["error"]


def test_alg_none_is_refused(app: App) -> None:
    row, _ = new_client(app)
    now = int(time.time())
    unsigned = jwt.encode({"iss": row.id, "iat": now, "exp": now + 60}, None, algorithm="none")
    r = app.client.get("/api/tags", headers=bearer(unsigned))
    assert r.status_code == 401 and "'none'" in r.json()["error"]


def test_hs_rs_confusion_is_refused(app: App, rsa_key: rsa.RSAPrivateKey) -> None:
    """A token "signed" HS256 with the provider's public key as the HMAC secret."""
    import hashlib
    import hmac
    import json

    now = int(time.time())
    header = {"alg": "HS256", "typ": "JWT"}
    claims = {"iss": IDP, "aud": "llmux-api", "sub": "eve", "iat": now, "exp": now + 60}

    def part(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    signing_input = f"{part(header)}.{part(claims)}"
    mac = hmac.new(public_pem(rsa_key), signing_input.encode(), hashlib.sha256).digest()
    forged = signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    r = app.client.get("/api/tags", headers=bearer(forged))
    assert r.status_code == 401


def test_a_short_client_secret_is_refused_with_the_rfc(app: App) -> None:
    with pytest.raises(Exception) as refused:
        new_client(app, secret="only-sixteen-byt")
    assert "32 bytes" in str(refused.value) and "RFC 7518" in str(refused.value)
    root = make_user(app, "root", "admin")
    _, admin_key = call(app, app.access.create_key, root, scopes=frozenset({"admin"}))
    r = app.client.post("/admin/clients", json={"user": "root", "secret": "short"},
                        headers=bearer(admin_key))  # fmt: skip
    assert r.status_code == 400 and "RFC 7518" in r.json()["error"]["message"]


def test_expiry_nbf_and_leeway(app: App) -> None:
    row, secret = new_client(app)
    now = int(time.time())
    expired = generate_token(row.id, secret, iat=now - 7200, exp=now - 3600)
    r = app.client.get("/api/tags", headers=bearer(expired))
    assert r.status_code == 401 and "expired" in r.json()["error"]
    within_leeway = generate_token(row.id, secret, iat=now - 100, exp=now - 10)  # leeway 30 s
    assert app.client.get("/api/tags", headers=bearer(within_leeway)).status_code == 200
    future = generate_token(row.id, secret, nbf=now + 600)
    r = app.client.get("/api/tags", headers=bearer(future))
    assert r.status_code == 401 and "not valid yet" in r.json()["error"]
    too_long = generate_token(row.id, secret, exp=now + 3 * 86400)
    assert app.client.get("/api/tags", headers=bearer(too_long)).status_code == 401
    no_exp = jwt.encode({"iss": row.id, "iat": now}, secret, algorithm="HS256")
    r = app.client.get("/api/tags", headers=bearer(no_exp))
    assert r.status_code == 401 and "'exp'" in r.json()["error"]


def test_an_unknown_issuer_is_refused(app: App) -> None:
    token = generate_token("nobody", "x" * 40)
    r = app.client.get("/api/tags", headers=bearer(token))
    assert r.status_code == 401 and "issuer" in r.json()["error"]


def test_revocation_by_jti(app: App) -> None:
    row, secret = new_client(app)
    token = generate_token(row.id, secret, jti="ticket-1")
    assert app.client.get("/api/tags", headers=bearer(token)).status_code == 200
    call(app, app.access.revoke_token, "ticket-1")
    r = app.client.get("/api/tags", headers=bearer(token))
    assert r.status_code == 401 and "revoked" in r.json()["error"]


# ---- an external identity provider ----------------------------------------------------------


def idp_token(key: rsa.RSAPrivateKey, **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": IDP, "aud": "llmux-api", "sub": "svc-42", "iat": now, "exp": now + 300,
               "scope": "inference models:read", **claims}  # fmt: skip
    return jwt.encode(payload, key, algorithm="RS256")


def test_an_external_providers_rs256_token(app: App, rsa_key: rsa.RSAPrivateKey) -> None:
    assert app.client.get("/api/tags", headers=bearer(idp_token(rsa_key))).status_code == 200
    r = app.client.get("/api/tags", headers=bearer(idp_token(rsa_key, aud="someone-else")))
    assert r.status_code == 401 and "audience" in r.json()["error"]
    narrow = idp_token(rsa_key, scope="inference")
    assert app.client.get("/api/tags", headers=bearer(narrow)).status_code == 403
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert app.client.get("/api/tags", headers=bearer(idp_token(other))).status_code == 401
    # the provider's token may not grant more than [auth] external_scopes
    wide = idp_token(rsa_key, scope="admin models:write")
    assert app.client.get("/admin/users", headers=bearer(wide)).status_code == 403


def test_a_jwks_url_is_fetched_and_refetched_for_a_new_kid(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    import http.server
    import json
    import threading

    from jwt.algorithms import RSAAlgorithm

    from tests.conftest import free_port

    def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
        return {**json.loads(RSAAlgorithm.to_jwk(key.public_key())), "kid": kid, "alg": "RS256"}

    served: dict[str, Any] = {"keys": [jwk(rsa_key, "k1")]}
    fetches: list[str] = []

    class Jwks(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fetches.append(self.path)
            body = json.dumps(served).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    port = free_port()
    jwks = http.server.ThreadingHTTPServer(("127.0.0.1", port), Jwks)
    threading.Thread(target=jwks.serve_forever, daemon=True).start()
    issuer = {"issuer": IDP, "jwks_url": f"http://127.0.0.1:{port}/jwks.json"}
    try:
        with in_process(tmp_path, auth={"mode": "on", "issuers": [issuer]}) as app:
            now = int(time.time())
            claims = {
                "iss": IDP,
                "sub": "svc",
                "iat": now,
                "exp": now + 300,
                "scope": "models:read",
            }

            def token(key: rsa.RSAPrivateKey, kid: str) -> str:
                return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})

            assert (
                app.client.get("/api/tags", headers=bearer(token(rsa_key, "k1"))).status_code == 200
            )
            assert len(fetches) == 1
            rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            served["keys"].append(jwk(rotated, "k2"))
            # a new kid within a minute of the last fetch is not fetched again...
            assert (
                app.client.get("/api/tags", headers=bearer(token(rotated, "k2"))).status_code == 401
            )
            assert len(fetches) == 1
            app.access.issuers[IDP].fetched_at -= 120  # ...a minute later it is
            assert (
                app.client.get("/api/tags", headers=bearer(token(rotated, "k2"))).status_code == 200
            )
            assert len(fetches) == 2
    finally:
        jwks.shutdown()
