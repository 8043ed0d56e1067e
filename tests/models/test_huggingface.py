"""hf.co/<user>/<repo>[:<quant>] pulls, through huggingface_hub, against a local fake
Hub endpoint (model listing with LFS sha256 + resolve URLs that redirect)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llmux.config import StoreSettings
from llmux.core.names import ModelName
from llmux.errors import ModelNotFound
from llmux.models.huggingface import GGUFFile, choose_file, repo_and_quant
from llmux.models.pull import Puller
from llmux.models.registry import RegistryError
from llmux.models.store import ModelStore
from tests.conftest import free_port
from tests.support.registry import serve, tiny_gguf

pytestmark = pytest.mark.anyio

FILES = {
    "SmolThing-Q4_K_M.gguf": tiny_gguf(50_000, seed=1),
    "SmolThing-Q8_0.gguf": tiny_gguf(80_000, seed=2),
    "mmproj-SmolThing-f16.gguf": tiny_gguf(10_000, seed=3),
    "README.md": b"# SmolThing",
}


class FakeHub:
    def __init__(self) -> None:
        self.port = free_port()
        self.seen: list[tuple[str, str]] = []
        self.tamper = False

    def app(self) -> Starlette:
        async def info(request: Request) -> Response:
            repo = f"{request.path_params['user']}/{request.path_params['repo']}"
            self.seen.append(("info", repo))
            if repo != "TheUser/SmolThing-GGUF":
                return JSONResponse(
                    {"error": "Repository not found"}, 404, headers={"X-Error-Code": "RepoNotFound"}
                )
            siblings = []
            for name, data in FILES.items():
                entry: dict[str, Any] = {"rfilename": name, "size": len(data)}
                if name.endswith(".gguf"):
                    sha = hashlib.sha256(data).hexdigest()
                    entry["lfs"] = {"sha256": sha, "size": len(data), "pointerSize": 134}
                siblings.append(entry)
            return JSONResponse({"id": repo, "sha": "c0ffee", "siblings": siblings})

        async def resolve(request: Request) -> Response:
            p = request.path_params
            self.seen.append(("resolve", f"{p['rev']}/{p['file']}"))
            return Response(status_code=302, headers={"Location": f"/cdn/{p['file']}"})

        async def cdn(request: Request) -> Response:
            data = FILES[request.path_params["file"]]
            if self.tamper:
                data = bytes(reversed(data))
            a, _, b = request.headers.get("range", "bytes=0-").removeprefix("bytes=").partition("-")
            start, end = int(a), min(int(b or len(data) - 1), len(data) - 1)
            self.seen.append(("range", f"{start}-{end}"))
            return Response(
                data[start : end + 1],
                status_code=206,
                headers={"Content-Range": f"bytes {start}-{end}/{len(data)}"},
            )

        return Starlette(
            routes=[
                Route("/api/models/{user}/{repo}", info),
                Route("/{user}/{repo}/resolve/{rev}/{file}", resolve),
                Route("/cdn/{file}", cdn),
            ]
        )


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    fake = FakeHub()
    for _ in serve(fake.app(), fake.port):
        yield fake


def puller(home: Path, hub: FakeHub) -> Puller:
    settings = StoreSettings(hf_endpoint=f"http://127.0.0.1:{hub.port}", registry_timeout=10)
    return Puller(ModelStore(home / "models"), settings)


async def test_pull_a_quantisation_from_a_hub_repository(hub: FakeHub, tmp_path: Path) -> None:
    p = puller(tmp_path, hub)
    lines = [x.wire() async for x in p.pull("hf.co/TheUser/SmolThing-GGUF:Q8_0")]
    data = FILES["SmolThing-Q8_0.gguf"]
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert lines[0] == {"status": "pulling manifest"}
    assert lines[-3:] == [
        {"status": "verifying sha256 digest"},
        {"status": "writing manifest"},
        {"status": "success"},
    ]
    assert {line.get("digest") for line in lines if line.get("digest")} == {digest}
    assert ("info", "TheUser/SmolThing-GGUF") in hub.seen  # the repo's case was kept
    assert ("resolve", "c0ffee/SmolThing-Q8_0.gguf") in hub.seen

    record = p.store.resolve(ModelName.parse("hf.co/theuser/smolthing-gguf:q8_0"))
    assert record.model_path.read_bytes() == data
    assert record.config["model_family"] == "llama"
    path = p.store.root / "manifests" / "hf.co" / "theuser" / "smolthing-gguf" / "q8_0"
    assert json.loads(path.read_bytes())["layers"][0]["digest"] == digest


async def test_latest_prefers_q4_k_m_and_errors_name_the_choices(
    hub: FakeHub, tmp_path: Path
) -> None:
    p = puller(tmp_path, hub)
    lines = [x.wire() async for x in p.pull("hf.co/TheUser/SmolThing-GGUF")]
    assert lines[-1] == {"status": "success"}
    record = p.store.resolve(ModelName.parse("hf.co/theuser/smolthing-gguf"))
    assert record.model_path.read_bytes() == FILES["SmolThing-Q4_K_M.gguf"]

    with pytest.raises(ModelNotFound, match=r"SmolThing-Q8_0\.gguf"):
        await anext(p.pull("hf.co/TheUser/SmolThing-GGUF:Q2_K"))
    with pytest.raises(ModelNotFound, match="no such repository"):
        await anext(p.pull("hf.co/TheUser/Missing"))


async def test_a_tampered_hub_file_installs_nothing(hub: FakeHub, tmp_path: Path) -> None:
    hub.tamper = True
    p = puller(tmp_path, hub)
    with pytest.raises(RegistryError, match="digest mismatch"):
        [x async for x in p.pull("hf.co/TheUser/SmolThing-GGUF:Q8_0")]
    assert list(p.store.blobs.iterdir()) == []
    assert not (p.store.manifests / "hf.co").exists()


def test_file_choice_rules() -> None:
    files = [GGUFFile(n, "sha256:" + "0" * 64, 1) for n in ("m-Q4_0.gguf", "m-Q4_K_M.gguf")]
    assert choose_file("u/r", "q4_0", files).filename == "m-Q4_0.gguf"
    assert choose_file("u/r", "latest", files).filename == "m-Q4_K_M.gguf"
    split = [GGUFFile("big-Q8_0-00001-of-00002.gguf", "sha256:" + "0" * 64, 1)]
    with pytest.raises(RegistryError, match="llama-gguf-split"):
        choose_file("u/r", "q8_0", split)
    assert repo_and_quant("hf.co/User/Repo:Q8_0") == ("User/Repo", "q8_0")
    assert repo_and_quant("https://hf.co/User/Repo") == ("User/Repo", "latest")
