"""Access control's routes: the OAuth2 token endpoint, the first admin's setup, a
caller's own identity and keys, and the admin API for users, keys, clients and tokens.

Every answer that carries a secret (a new key, a client secret, a token) is sent once,
with ``Cache-Control: no-store``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from llmux.auth.control import AccessControl
from llmux.auth.manage import OAuthError
from llmux.core.context import Principal
from llmux.errors import InvalidRequest, NotFound
from llmux.protocols.access import (
    ClientBody,
    KeyBody,
    LoginBody,
    RevokeTokenBody,
    SetupBody,
    UserBody,
    UserPatch,
    parse_expiry,
)
from llmux.server.access import CSRF_COOKIE, SESSION_COOKIE
from llmux.server.body import parse_body
from llmux.server.deps import context, services
from llmux.server.openapi import request_body
from llmux.storage.principals import User

router = APIRouter(tags=["access"])
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
MAX_FORM = 16 * 1024


def control(request: Request) -> AccessControl:
    return services(request).access


def _secret(body: dict[str, Any], status: int = 201) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=NO_STORE)


# -- OAuth2 (RFC 6749 section 4.4) ------------------------------------------------------


def _oauth_error(exc: OAuthError) -> JSONResponse:
    headers = dict(NO_STORE)
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="llmux"'
    body = {"error": exc.error, "error_description": exc.description}
    return JSONResponse(body, status_code=exc.status, headers=headers)


def _basic(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise OAuthError(
            "invalid_client", "the Basic credentials are not valid Base64", 401
        ) from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise OAuthError("invalid_client", "the Basic credentials have no ':'", 401)
    # section 2.3.1: both are form-url-encoded before Base64
    return unquote_plus(client_id), unquote_plus(secret)


async def _form(request: Request) -> dict[str, str]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "send the parameters as "
                         "application/x-www-form-urlencoded")  # fmt: skip
    raw = await request.body()
    if len(raw) > MAX_FORM:
        raise OAuthError("invalid_request", "the request is too large")
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(raw))
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "the form body does not parse") from None
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:  # section 3.2: no parameter more than once
            raise OAuthError("invalid_request", f"the parameter {key!r} is repeated")
        form[key] = value
    return form


@router.post("/oauth2/token", include_in_schema=True)
async def token(request: Request) -> Response:
    try:
        form = await _form(request)
        grant = form.get("grant_type")
        if not grant:
            raise OAuthError("invalid_request", "grant_type is missing")
        if grant != "client_credentials":
            raise OAuthError("unsupported_grant_type",
                             "this server grants only client_credentials")  # fmt: skip
        header = request.headers.get("authorization")
        basic = _basic(header) if header else None
        posted = form.get("client_id"), form.get("client_secret")
        if basic is not None and (posted[0] is not None or posted[1] is not None):
            raise OAuthError("invalid_request", "use one way to authenticate the client: "
                             "Basic or client_id and client_secret in the body")  # fmt: skip
        if basic is None and header:
            raise OAuthError("invalid_client", "authenticate the client with Basic", 401)
        client_id, secret = basic or posted
        if not client_id or secret is None:
            raise OAuthError("invalid_client", "client authentication is missing: send "
                             "Basic client_id:client_secret", 401)  # fmt: skip
        answer = await control(request).client_credentials(
            client_id, secret, form.get("scope"), context(request).client
        )
    except OAuthError as exc:
        return _oauth_error(exc)
    return JSONResponse(answer, headers=NO_STORE)


# -- the first admin, and a caller's own ------------------------------------------------


@router.post("/auth/setup", status_code=201, openapi_extra=request_body(SetupBody))
async def setup(request: Request) -> dict[str, Any]:
    body = await parse_body(request, SetupBody)
    user = await control(request).setup(
        body.token, body.name, body.password, context(request).client
    )
    await services(request).history.repo.adopt(user.id)  # what was made before
    return {"user": user.public()}


@router.post("/auth/login", openapi_extra=request_body(LoginBody))
async def login(request: Request) -> Response:
    """The web UI's login: a session cookie (HttpOnly, SameSite=Lax, Secure over HTTPS)
    and the CSRF token, also as the ``llmux_csrf`` cookie the UI's script reads."""
    body = await parse_body(request, LoginBody)
    access = control(request)
    user = await access.login(body.name, body.password, context(request).client)
    token, csrf = await access.open_session(user)
    answer = JSONResponse({"user": user.public(), "csrf_token": csrf}, headers=NO_STORE)
    secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
    life = int(access.settings.session_max_s)
    answer.set_cookie(SESSION_COOKIE, token, max_age=life, httponly=True, samesite="lax",
                      secure=secure, path="/")  # fmt: skip
    answer.set_cookie(CSRF_COOKIE, csrf, max_age=life, samesite="lax", secure=secure, path="/")
    return answer


@router.post("/auth/logout", status_code=204)
async def logout(request: Request) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await control(request).close_session(token)
    answer = Response(status_code=204, headers=NO_STORE)
    answer.delete_cookie(SESSION_COOKIE, path="/")
    answer.delete_cookie(CSRF_COOKIE, path="/")
    return answer


def _principal(request: Request) -> Principal:
    return context(request).principal


@router.get("/auth/me")
async def me(request: Request) -> dict[str, Any]:
    p = _principal(request)
    return {
        "kind": p.kind,
        "id": p.id,
        "name": p.name,
        "user_id": p.user_id,
        "scopes": sorted(p.scopes),
        "models": list(p.models),
    }


async def _own_user(request: Request) -> User:
    p = _principal(request)
    if p.user_id is None:
        raise InvalidRequest(
            "this caller is not a user's: keys of your own need access control on and a "
            "user's credential (admins can use /admin/keys)"
        )
    return await control(request).user(p.user_id)


def _key_answer(row: Any, text: str) -> JSONResponse:
    return _secret({**row.public(), "key": text})


@router.get("/api/keys")
async def own_keys(request: Request) -> dict[str, Any]:
    user = await _own_user(request)
    return {"keys": [k.public() for k in await control(request).repo.keys(user.id)]}


@router.post("/api/keys", status_code=201, openapi_extra=request_body(KeyBody))
async def create_own_key(request: Request) -> Response:
    body = await parse_body(request, KeyBody)
    if body.user is not None:
        raise InvalidRequest("'user' is for /admin/keys; your own keys are yours", param="user")
    user = await _own_user(request)
    row, text = await control(request).create_key(
        user, name=body.name, scopes=body.scope_set(), models=tuple(body.models),
        expires_in=parse_expiry(body.expires_in), within=_principal(request),
    )  # fmt: skip
    return _key_answer(row, text)


@router.delete("/api/keys/{key_id}", status_code=204)
async def revoke_own_key(request: Request, key_id: str) -> Response:
    user = await _own_user(request)
    found = await control(request).repo.key(key_id)
    if found is None or found.user_id != user.id:
        raise NotFound(f"you have no key {key_id!r}")
    await control(request).revoke_key(key_id)
    return Response(status_code=204)


# -- the admin API ------------------------------------------------------------------------


@router.get("/admin/users")
async def list_users(request: Request) -> dict[str, Any]:
    return {"users": [u.public() for u in await control(request).repo.users()]}


@router.post("/admin/users", status_code=201, openapi_extra=request_body(UserBody))
async def add_user(request: Request) -> dict[str, Any]:
    body = await parse_body(request, UserBody)
    return (await control(request).add_user(body.name, body.password, body.role)).public()


@router.patch("/admin/users/{user_id}", openapi_extra=request_body(UserPatch))
async def patch_user(request: Request, user_id: str) -> dict[str, Any]:
    body = await parse_body(request, UserPatch)
    access = control(request)
    user = await access.user(user_id)
    if body.password is not None:
        await access.set_password(user.id, body.password)
    updated = await access.update_user(
        user.id, role=body.role, disabled=body.disabled, team=body.team
    )
    return updated.public()


@router.delete("/admin/users/{user_id}", status_code=204)
async def delete_user(request: Request, user_id: str) -> Response:
    access = control(request)
    await access.delete_user((await access.user(user_id)).id)
    return Response(status_code=204)


@router.get("/admin/keys")
async def list_keys(request: Request) -> dict[str, Any]:
    return {"keys": [k.public() for k in await control(request).repo.keys()]}


@router.post("/admin/keys", status_code=201, openapi_extra=request_body(KeyBody))
async def add_key(request: Request) -> Response:
    body = await parse_body(request, KeyBody)
    access = control(request)
    if body.user is None:
        raise InvalidRequest("name the key's owner: 'user' (an id or a name)", param="user")
    row, text = await access.create_key(
        await access.user(body.user), name=body.name, scopes=body.scope_set(),
        models=tuple(body.models), expires_in=parse_expiry(body.expires_in),
    )  # fmt: skip
    return _key_answer(row, text)


@router.delete("/admin/keys/{key_id}", status_code=204)
async def revoke_key(request: Request, key_id: str) -> Response:
    await control(request).revoke_key(key_id)
    return Response(status_code=204)


@router.post("/admin/keys/{key_id}/rotate", status_code=201)
async def rotate_key(request: Request, key_id: str) -> Response:
    row, text = await control(request).rotate_key(key_id)
    return _key_answer(row, text)


@router.get("/admin/clients")
async def list_clients(request: Request) -> dict[str, Any]:
    return {"clients": [c.public() for c in await control(request).repo.clients()]}


@router.post("/admin/clients", status_code=201, openapi_extra=request_body(ClientBody))
async def add_client(request: Request) -> Response:
    body = await parse_body(request, ClientBody)
    access = control(request)
    if body.user is None:
        raise InvalidRequest("name the client's owner: 'user' (an id or a name)", param="user")
    row, secret = await access.create_client(
        await access.user(body.user), name=body.name, scopes=body.scope_set(),
        models=tuple(body.models), secret=body.secret,
    )  # fmt: skip
    return _secret({**row.public(), "client_secret": secret})


@router.delete("/admin/clients/{client_id}", status_code=204)
async def revoke_client(request: Request, client_id: str) -> Response:
    await control(request).revoke_client(client_id)
    return Response(status_code=204)


@router.post("/admin/clients/{client_id}/rotate", status_code=201)
async def rotate_client(request: Request, client_id: str) -> Response:
    secret = await control(request).rotate_client(client_id)
    return _secret({"client_id": client_id, "client_secret": secret})


@router.post("/admin/tokens/revoke", status_code=204, openapi_extra=request_body(RevokeTokenBody))
async def revoke_token(request: Request) -> Response:
    body = await parse_body(request, RevokeTokenBody)
    given = body.token or body.jti
    if not given:
        raise InvalidRequest("send 'token' (the whole token) or 'jti'")
    await control(request).revoke_token(given)
    return Response(status_code=204)
