"""A client for Docker Registry HTTP API v2, the protocol Ollama's registry speaks.

One :class:`RegistryClient` serves one operation on one repository
(``<namespace>/<model>``) through a pooled ``httpx.AsyncClient``:

* **auth**: a ``401`` with ``WWW-Authenticate: Bearer realm=..,service=..,scope=..``
  is answered by fetching an anonymous token from the realm and retrying once; the
  token is kept for the rest of the operation. It is only ever sent to the registry's
  own host, never to a redirect target.
* **manifests**: ``GET``/``PUT /v2/<repo>/manifests/<tag>``.
* **blobs**: :meth:`blob_location` resolves the redirect a registry answers with (a CDN
  URL, usually) once, so ranged parts go straight there; ``HEAD`` checks presence and
  :meth:`upload` runs the ``POST`` / ``PATCH`` (``Content-Range``) / ``PUT ?digest=``
  upload flow.
* **plain http** only with ``insecure`` (see :func:`registry_base`).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from llmux.core.names import ModelName
from llmux.errors import BackendError, InvalidRequest, ModelNotFound

MANIFEST_ACCEPT = "application/vnd.docker.distribution.manifest.v2+json"
MAX_REDIRECTS = 5
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


class RegistryError(BackendError):
    """The registry failed or refused (502): unreachable, unauthorised, bad answers."""

    status = 502
    code = "registry_error"


def registry_base(name: ModelName, raw: str, insecure: bool) -> str:
    """``https://host``, or ``http://host`` when the name says ``http://`` or the
    request says ``insecure`` (plain-http registries are refused otherwise)."""
    text = raw.strip().lower()
    if text.startswith("http://") and not insecure:
        raise InvalidRequest(
            f"registry {name.host} would be reached over plain http; "
            'pass "insecure": true (or `--insecure` on the CLI) to allow it'
        )
    scheme = "https" if text.startswith("https://") or not insecure else "http"
    return f"{scheme}://{name.host}"


def parse_challenge(header: str) -> dict[str, str] | None:
    scheme, _, rest = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return {k.lower(): v for k, v in _CHALLENGE.findall(rest)}


class RegistryClient:
    def __init__(
        self, name: ModelName, base: str, http: httpx.AsyncClient, *, insecure: bool = False
    ) -> None:
        self.name = name
        self.base = base.rstrip("/")
        self.repo = f"{name.namespace}/{name.model}"
        self.http = http
        self.insecure = insecure
        self._token: str | None = None

    # -- requests ---------------------------------------------------------------------
    def url(self, tail: str) -> str:
        return f"{self.base}/v2/{self.repo}/{tail}"

    def _own_host(self, url: str) -> bool:
        return urlsplit(url).netloc == urlsplit(self.base).netloc

    def _headers(self, url: str, extra: dict[str, str] | None) -> dict[str, str]:
        headers = dict(extra or {})
        if self._token and self._own_host(url):
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | AsyncIterator[bytes] | None = None,
        stream: bool = False,
        retry_auth: bool = True,
    ) -> httpx.Response:
        """One request (no redirects followed); a bearer challenge is met once."""
        request = self.http.build_request(
            method, url, headers=self._headers(url, headers), content=content
        )
        try:
            response = await self.http.send(request, stream=stream)
        except httpx.HTTPError as exc:
            raise RegistryError(
                f"cannot reach registry {self.name.host}: {exc or type(exc).__name__}; "
                "check the model name and your network (plain-http registries need insecure)"
            ) from exc
        challenge = response.headers.get("www-authenticate", "")
        if response.status_code == 401 and retry_auth and self._own_host(url):
            params = parse_challenge(challenge)
            await response.aclose()
            if params is None or not params.get("realm"):
                raise RegistryError(
                    f"registry {self.name.host} asks for credentials ({challenge or 'no challenge'})"
                    "; llmux pulls and pushes with anonymous bearer tokens only"
                )
            self._token = await self._fetch_token(params)
            if content is not None and not isinstance(content, bytes):
                raise RegistryError(f"registry {self.name.host} refused an upload (401)")
            return await self.send(
                method, url, headers=headers, content=content, stream=stream, retry_auth=False
            )
        return response

    async def _fetch_token(self, params: dict[str, str]) -> str:
        realm = params["realm"]
        if urlsplit(realm).scheme != "https" and not self.insecure:
            raise RegistryError(
                f"registry {self.name.host} sent a token realm over plain http ({realm}); "
                "pass insecure to allow it"
            )
        query = {k: params[k] for k in ("service", "scope") if params.get(k)}
        try:
            response = await self.http.get(realm, params=query)
        except httpx.HTTPError as exc:
            raise RegistryError(f"cannot reach the token service {realm}: {exc}") from exc
        if response.status_code != 200:
            raise RegistryError(
                f"token service {realm} answered {response.status_code}: {response.text[:200]}"
            )
        try:
            body = response.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"token service {realm} sent no token")
        return token

    async def fail(self, response: httpx.Response, what: str) -> RegistryError:
        """A RegistryError naming the registry's own message (its ``errors`` list)."""
        if not response.is_closed:
            await response.aread()
        detail = response.text[:300]
        try:
            errors = response.json().get("errors") or []
            detail = "; ".join(str(e.get("message") or e.get("code")) for e in errors) or detail
        except (ValueError, AttributeError):
            pass
        return RegistryError(
            f"{what}: registry {self.name.host} answered {response.status_code}"
            + (f" ({detail})" if detail else "")
        )

    # -- manifests ----------------------------------------------------------------------
    async def get_manifest(self) -> tuple[dict[str, Any], bytes]:
        url = self.url(f"manifests/{self.name.tag}")
        response = await self.send("GET", url, headers={"Accept": MANIFEST_ACCEPT})
        if response.status_code == 404:
            raise ModelNotFound(
                self.name.display,
                hint=f"the registry {self.name.host} has no {self.repo}:{self.name.tag}; "
                "check the name and tag",
            )
        if response.status_code != 200:
            raise await self.fail(response, "pull model manifest")
        raw = response.content
        try:
            manifest = json.loads(raw)
            layers = manifest["layers"]
            assert isinstance(layers, list)
        except (ValueError, KeyError, AssertionError):
            raise RegistryError(
                f"registry {self.name.host} sent a manifest llmux cannot read"
            ) from None
        return manifest, raw

    async def put_manifest(self, raw: bytes, media_type: str) -> None:
        url = self.url(f"manifests/{self.name.tag}")
        response = await self.send("PUT", url, headers={"Content-Type": media_type}, content=raw)
        if response.status_code not in (200, 201, 202):
            raise await self.fail(response, "push manifest")

    # -- blobs --------------------------------------------------------------------------
    async def blob_location(self, digest: str) -> str:
        """Where the blob's bytes are: the registry URL, or the redirect target."""
        url = self.url(f"blobs/{digest}")
        for _ in range(MAX_REDIRECTS + 1):
            response = await self.send("GET", url, headers={"Range": "bytes=0-0"}, stream=True)
            await response.aclose()
            if response.is_redirect:
                url = urljoin(url, response.headers["location"])
                continue
            if response.status_code == 404:
                raise RegistryError(
                    f"registry {self.name.host} has no blob {digest} that its manifest names"
                )
            if response.status_code not in (200, 206):
                raise await self.fail(response, f"pull blob {digest[7:19]}")
            return url
        raise RegistryError(f"too many redirects for blob {digest} at {self.name.host}")

    async def has_blob(self, digest: str) -> bool:
        response = await self.send("HEAD", self.url(f"blobs/{digest}"))
        return response.status_code == 200

    async def upload(
        self,
        digest: str,
        size: int,
        chunks: Callable[[int, int], AsyncIterator[bytes]],
        chunk_size: int,
    ) -> None:
        """The v2 upload flow: open a session, ``PATCH`` each chunk, ``PUT`` the digest.

        ``chunks(offset, length)`` yields that byte range of the blob."""
        response = await self.send("POST", self.url("blobs/uploads/"))
        if response.status_code not in (200, 201, 202):
            raise await self.fail(response, "start blob upload")
        location = self._location(response)
        offset = 0
        while offset < size:
            length = min(chunk_size, size - offset)
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + length - 1}",
                "Content-Length": str(length),
            }
            response = await self.send(
                "PATCH", location, headers=headers, content=chunks(offset, length)
            )
            if response.status_code not in (200, 201, 202, 204):
                raise await self.fail(response, f"upload blob {digest[7:19]}")
            location = self._location(response, location)
            offset += length
        sep = "&" if "?" in location else "?"
        response = await self.send("PUT", f"{location}{sep}digest={digest}")
        if response.status_code not in (200, 201, 204):
            raise await self.fail(response, f"finish blob upload {digest[7:19]}")

    def _location(self, response: httpx.Response, default: str | None = None) -> str:
        where = response.headers.get("docker-upload-location") or response.headers.get("location")
        if not where:
            if default:
                return default
            raise RegistryError(f"registry {self.name.host} gave no upload location")
        return urljoin(str(response.request.url), str(where))
