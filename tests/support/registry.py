"""A small Docker v2 registry for tests, on loopback in a thread (real HTTP).

It serves manifests and blobs (with Range), takes uploads (POST / PATCH / PUT) and can
inject the faults a real one shows: bearer-token challenges, redirects of blobs to a
"CDN" on another host name, tampered bytes, connections that drop mid-blob, slow
transfers. Every request is logged so tests can check what the client sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import struct
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.conftest import free_port

MANIFEST_MEDIA = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA = "application/vnd.docker.container.image.v1+json"
LAYER = "application/vnd.ollama.image."


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tiny_gguf(size: int = 4096, seed: int = 0) -> bytes:
    """A GGUF header (architecture llama, no tensors) padded with bytes to ``size``."""
    key, value = b"general.architecture", b"llama"
    head = struct.pack("<4sIQQ", b"GGUF", 3, 0, 1)
    head += struct.pack("<Q", len(key)) + key + struct.pack("<I", 8)
    head += struct.pack("<Q", len(value)) + value
    filler = hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1)
    return (head + filler)[: max(size, len(head))]


@dataclass
class Logged:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class FakeRegistry:
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[tuple[str, str], bytes] = field(default_factory=dict)
    log: list[Logged] = field(default_factory=list)
    tampered: dict[str, bytes] = field(default_factory=dict)  # digest -> bytes sent instead
    drop_after: dict[str, int] = field(default_factory=dict)  # digest -> bytes, once
    token: str | None = None  # require this bearer token
    redirect: bool = False  # blobs answer 307 to /cdn on another port (another host)
    delay_per_chunk: float = 0.0
    chunk: int = 1 << 16
    uploads: dict[str, bytearray] = field(default_factory=dict)
    port: int = 0
    cdn_port: int = 0

    # -- content ----------------------------------------------------------------------
    def add_blob(self, data: bytes) -> dict[str, Any]:
        digest = digest_of(data)
        self.blobs[digest] = data
        return {"digest": digest, "size": len(data)}

    def publish(
        self, repo: str, tag: str, model: bytes, layers: dict[str, bytes] | None = None
    ) -> bytes:
        """Store a model (a GGUF plus text layers by kind) and return its manifest."""
        config = {
            "model_format": "gguf",
            "model_family": "llama",
            "model_families": ["llama"],
            "model_type": "135M",
            "file_type": "Q4_1",
            "architecture": "amd64",
            "os": "linux",
        }
        entries = [{"mediaType": LAYER + "model", **self.add_blob(model)}]
        for kind, data in (layers or {}).items():
            entries.append({"mediaType": LAYER + kind, **self.add_blob(data)})
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA,
            "config": {"mediaType": CONFIG_MEDIA, **self.add_blob(json.dumps(config).encode())},
            "layers": entries,
        }
        raw = json.dumps(manifest).encode()
        self.manifests[(repo, tag)] = raw
        return raw

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def requests(self, method: str, part: str) -> list[Logged]:
        return [r for r in self.log if r.method == method and part in r.path]

    # -- the app ----------------------------------------------------------------------
    def _authorised(self, request: Request) -> Response | None:
        if self.token is None or request.url.path.startswith(("/cdn/", "/token")):
            return None
        if request.headers.get("authorization") == f"Bearer {self.token}":
            return None
        realm = f"http://{self.host}/token"
        challenge = f'Bearer realm="{realm}",service="fake",scope="repository:x:pull"'
        return JSONResponse(
            {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
            status_code=401,
            headers={"WWW-Authenticate": challenge},
        )

    async def _token(self, request: Request) -> Response:
        assert request.query_params.get("service") == "fake"
        return JSONResponse({"token": self.token})

    async def _manifest(self, request: Request) -> Response:
        p = request.path_params
        key = (f"{p['ns']}/{p['model']}", p["tag"])
        if request.method == "PUT":
            self.manifests[key] = await request.body()
            return Response(status_code=201)
        if key not in self.manifests:
            return JSONResponse(
                {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}, 404
            )
        return Response(self.manifests[key], media_type=MANIFEST_MEDIA)

    async def _blob(self, request: Request) -> Response:
        digest = request.path_params["digest"]
        if digest not in self.blobs:
            return JSONResponse({"errors": [{"code": "BLOB_UNKNOWN"}]}, 404)
        if request.method == "HEAD":
            return Response(headers={"Content-Length": str(len(self.blobs[digest]))})
        if self.redirect and not request.url.path.startswith("/cdn/"):
            target = f"http://127.0.0.1:{self.cdn_port}/cdn/{digest}"
            return Response(status_code=307, headers={"Location": target})
        data = self.tampered.get(digest, self.blobs[digest])
        start, end = 0, len(data) - 1
        ranged = request.headers.get("range", "")
        if ranged.startswith("bytes="):
            a, _, b = ranged[6:].partition("-")
            start, end = int(a), min(int(b) if b else end, end)
        body = data[start : end + 1]
        drop = None
        if ranged != "bytes=0-0" and digest in self.drop_after:
            drop = self.drop_after.pop(digest)
        headers = {"Content-Length": str(len(body)), "Accept-Ranges": "bytes"}
        if ranged:
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        return StreamingResponse(
            self._stream(body, drop), status_code=206 if ranged else 200, headers=headers
        )

    async def _stream(self, body: bytes, drop: int | None) -> AsyncIterator[bytes]:
        for at in range(0, len(body), self.chunk):
            piece = body[at : at + self.chunk]
            if drop is not None and at + len(piece) > drop:
                yield piece[: drop - at]
                raise ConnectionAbortedError("fault injected: connection dropped")
            if self.delay_per_chunk:
                await asyncio.sleep(self.delay_per_chunk)
            yield piece

    async def _upload(self, request: Request) -> Response:
        p = request.path_params
        repo = f"{p['ns']}/{p['model']}"
        if request.method == "POST":
            upload = uuid.uuid4().hex
            self.uploads[upload] = bytearray()
            where = f"/v2/{repo}/blobs/uploads/{upload}"
            return Response(status_code=202, headers={"Location": where})
        upload = p["upload"]
        data = self.uploads[upload]
        if request.method == "PATCH":
            first = int(request.headers["content-range"].split("-")[0])
            assert first == len(data), (first, len(data))
            data.extend(await request.body())
            where = f"/v2/{repo}/blobs/uploads/{upload}"
            return Response(status_code=202, headers={"Location": where})
        data.extend(await request.body())  # PUT ?digest=
        digest = request.query_params["digest"]
        if digest_of(bytes(data)) != digest:
            return JSONResponse({"errors": [{"code": "DIGEST_INVALID"}]}, 400)
        self.blobs[digest] = bytes(data)
        return Response(status_code=201)

    def app(self) -> Starlette:
        async def logged(request: Request) -> Response:
            self.log.append(Logged(request.method, request.url.path, dict(request.headers)))
            denied = self._authorised(request)
            if denied is not None:
                return denied
            handler = request.scope["endpoint_handler"]
            response: Response = await handler(request)
            return response

        def route(path: str, handler: Any, methods: list[str]) -> Route:
            async def endpoint(request: Request) -> Response:
                request.scope["endpoint_handler"] = handler
                return await logged(request)

            return Route(path, endpoint, methods=methods)

        return Starlette(
            routes=[
                route("/token", self._token, ["GET"]),
                route("/v2/{ns}/{model}/manifests/{tag}", self._manifest, ["GET", "PUT"]),
                route("/v2/{ns}/{model}/blobs/uploads/", self._upload, ["POST"]),
                route("/v2/{ns}/{model}/blobs/uploads/{upload}", self._upload, ["PATCH", "PUT"]),
                route("/v2/{ns}/{model}/blobs/{digest}", self._blob, ["GET", "HEAD"]),
                route("/cdn/{digest}", self._blob, ["GET"]),
            ]
        )


def serve(app: Any, port: int) -> Iterator[None]:
    """Run an ASGI app on 127.0.0.1:port in a thread for the duration of the block."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "test server did not start"
        time.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(10)


def running_registry() -> Iterator[FakeRegistry]:
    registry = FakeRegistry(port=free_port(), cdn_port=free_port())
    app = registry.app()
    for _ in serve(app, registry.port):
        for _ in serve(app, registry.cdn_port):
            yield registry
