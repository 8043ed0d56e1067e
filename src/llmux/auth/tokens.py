"""JWT access tokens (RFC 7519, with RFC 8725's rules and RFC 9068's claim names).

Three kinds are accepted, told apart by the ``iss`` claim before anything is trusted:

* **llmux's own**, from ``POST /oauth2/token``: HS256 under the keyring's signing key,
  ``iss`` and ``aud`` = ``[auth] issuer``, ``sub`` = ``client_id`` = the client,
  ``scope``, ``jti``, ``iat``, ``exp`` (``[auth] token_ttl_s``, 2 hours), header
  ``typ: at+jwt``.
* **signed by a client itself**: HS256 with its client secret (at least 32 bytes),
  ``iss`` = the client id, ``iat`` and ``exp`` required, at most
  :data:`MAX_CLIENT_TOKEN_S` (24 hours) apart.
* **from an external identity provider** (``[[auth.issuers]]``): RS256 or ES256 under
  a key of its JWKS (by ``kid``) or a PEM public key; ``aud`` checked when configured.

Each kind has a fixed algorithm list (``none`` is never one, and a key is only ever used
with its own kind's algorithms, so no HS/RS confusion); ``exp``, ``nbf`` and ``iat`` are
checked with ``[auth] leeway_s`` of clock skew; a ``jti`` revoked through the admin API
is refused.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from jwt import PyJWK, PyJWKSet

from llmux.errors import Unauthorized

OWN_ALGORITHMS = ["HS256"]
EXTERNAL_ALGORITHMS = ["RS256", "ES256"]
MAX_CLIENT_TOKEN_S = 24 * 3600
MAX_TOKEN_BYTES = 8192


def invalid(message: str) -> Unauthorized:
    return Unauthorized(message, error="invalid_token")


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says: its kind, subject, client, scopes and life."""

    kind: str  # "own", "client" or "external"
    subject: str
    client_id: str | None
    scopes: frozenset[str] | None  # None: the token names none (the client's apply)
    jti: str | None
    expires_at: float
    issuer: str


@dataclass(slots=True)
class ExternalIssuer:
    """An identity provider whose tokens are accepted, with its keys."""

    issuer: str
    audience: str | None = None
    jwks_url: str | None = None
    keys: dict[str, PyJWK] = field(default_factory=dict)  # kid ("" for a lone PEM key)
    fetched_at: float = 0.0

    def add_jwks(self, document: str | dict[str, Any]) -> None:
        data = json.loads(document) if isinstance(document, str) else document
        for key in PyJWKSet.from_dict(data).keys:
            self.keys[key.key_id or ""] = key
        self.fetched_at = time.time()

    def add_pem(self, pem: str, algorithm: str) -> None:
        self.keys[""] = PyJWK.from_dict(_jwk_from_pem(pem, algorithm))


def _jwk_from_pem(pem: str, algorithm: str) -> dict[str, Any]:
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm

    impl: Any = (
        RSAAlgorithm(RSAAlgorithm.SHA256)
        if algorithm == "RS256"
        else ECAlgorithm(ECAlgorithm.SHA256)
    )
    jwk: dict[str, Any] = json.loads(impl.to_jwk(impl.prepare_key(pem)))
    jwk["alg"] = algorithm
    return jwk


def unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims, unverified: only to choose the key. A token that is not a
    JWT, or names ``none`` or an algorithm outside every list, is refused here."""
    if len(token) > MAX_TOKEN_BYTES:
        raise invalid("the token is too long")
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise invalid("the bearer token is not a valid JWT") from None
    alg = header.get("alg")
    if alg not in OWN_ALGORITHMS + EXTERNAL_ALGORITHMS:
        raise invalid(
            f"token algorithm {alg!r} is not accepted; llmux accepts "
            f"{', '.join(OWN_ALGORITHMS + EXTERNAL_ALGORITHMS)}"
        )
    if not isinstance(claims.get("iss"), str) or not claims["iss"]:
        raise invalid("the token has no 'iss' claim")
    return header, claims


def verify(
    token: str,
    key: Any,
    algorithms: list[str],
    *,
    issuer: str,
    audience: str | None,
    leeway: float,
    required: tuple[str, ...] = ("exp", "iat"),
) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=algorithms,
            issuer=issuer,
            audience=audience,
            leeway=leeway,
            options={"require": list(required), "verify_aud": audience is not None},
        )
    except jwt.ExpiredSignatureError:
        raise invalid("the token has expired; get a new one") from None
    except jwt.ImmatureSignatureError:
        raise invalid("the token is not valid yet (nbf or iat is in the future)") from None
    except jwt.InvalidAudienceError:
        raise invalid("the token's audience ('aud') is not this server") from None
    except jwt.InvalidIssuerError:
        raise invalid("the token's issuer ('iss') is not accepted") from None
    except jwt.MissingRequiredClaimError as exc:
        raise invalid(f"the token lacks the '{exc.claim}' claim") from None
    except (jwt.InvalidAlgorithmError, jwt.InvalidKeyError):
        raise invalid("the token's algorithm does not match its issuer's key") from None
    except jwt.PyJWTError:
        raise invalid("the token's signature does not verify") from None
    return claims


def scopes_of(claims: dict[str, Any]) -> frozenset[str] | None:
    value = claims.get("scope", claims.get("scp"))
    if value is None:
        return None
    items = value.split() if isinstance(value, str) else value if isinstance(value, list) else []
    return frozenset(str(s) for s in items)


def issue(
    signing_key: bytes, issuer: str, client_id: str, scopes: str, ttl_s: int
) -> tuple[str, dict[str, Any]]:
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": issuer,
        "sub": client_id,
        "client_id": client_id,
        "scope": scopes,
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + ttl_s,
    }
    token = jwt.encode(claims, signing_key, algorithm="HS256", headers={"typ": "at+jwt"})
    return token, claims
