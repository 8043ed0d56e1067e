"""Pull and push against a real v2 registry on loopback (tests/support/registry.py)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from llmux.config import StoreSettings
from llmux.core.names import ModelName
from llmux.errors import InvalidRequest, ModelNotFound
from llmux.models.progress import Progress
from llmux.models.pull import Puller
from llmux.models.push import Push
from llmux.models.registry import RegistryError, registry_base
from llmux.models.store import ModelStore
from tests.support.registry import FakeRegistry, digest_of, running_registry, tiny_gguf

pytestmark = pytest.mark.anyio
MB = 1024 * 1024


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    yield from running_registry()


def make_puller(home: Path, **overrides: Any) -> Puller:
    options: dict[str, Any] = {"pull_part_min_mib": 1, "registry_timeout": 10, **overrides}
    return Puller(ModelStore(home / "models"), StoreSettings(**options))


async def lines(stream: AsyncIterator[Progress]) -> list[dict[str, Any]]:
    return [p.wire() async for p in stream]


def statuses(progress: list[dict[str, Any]]) -> list[str]:
    """The status sequence with repeats of the same status folded."""
    out: list[str] = []
    for line in progress:
        if not out or out[-1] != line["status"]:
            out.append(line["status"])
    return out


def files(store: ModelStore) -> list[str]:
    return sorted(p.name for p in store.blobs.iterdir())


def publish_tiny(registry: FakeRegistry, repo: str = "library/tiny", size: int = 3 * MB) -> bytes:
    layers = {"system": b"You are terse.", "params": json.dumps({"num_predict": 4}).encode()}
    return registry.publish(repo, "latest", tiny_gguf(size), layers)


async def test_pull_reports_ollama_sequence_and_installs_ollama_layout(
    registry: FakeRegistry, tmp_path: Path
) -> None:
    raw = publish_tiny(registry)
    manifest = json.loads(raw)
    puller = make_puller(tmp_path)
    progress = await lines(puller.pull(f"{registry.host}/library/tiny", insecure=True))

    digests = [layer["digest"] for layer in manifest["layers"]] + [manifest["config"]["digest"]]
    assert statuses(progress) == [
        "pulling manifest",
        *[f"pulling {d[7:19]}" for d in digests],
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]
    for line in progress:
        if line["status"] != "pulling manifest" and line["status"].startswith("pulling "):
            assert line["digest"] in digests and line["total"] >= line["completed"] >= 0
    last = {line["digest"]: line for line in progress if "digest" in line}
    assert all(line["completed"] == line["total"] for line in last.values())

    store = puller.store
    path = store.root / "manifests" / registry.host / "library" / "tiny" / "latest"
    assert path.read_bytes() == raw  # verbatim, so the digest matches the registry's
    assert files(store) == sorted(f"sha256-{d[7:]}" for d in digests)
    for blob in store.blobs.iterdir():
        assert "sha256-" + hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    record = store.resolve(ModelName.parse(f"{registry.host}/library/tiny"))
    assert record.layers["system"] == "You are terse." and record.params == {"num_predict": 4}
    # the 3 MiB model came in parallel ranged parts of 1 MiB
    parts = {r.headers["range"] for r in registry.requests("GET", digests[0][7:])}
    assert {"bytes=0-1048575", "bytes=1048576-2097151", "bytes=2097152-3145727"} <= parts


async def test_a_tampered_blob_fails_and_installs_nothing(
    registry: FakeRegistry, tmp_path: Path
) -> None:
    raw = publish_tiny(registry)
    model = json.loads(raw)["layers"][0]["digest"]
    registry.tampered[model] = tiny_gguf(3 * MB, seed=1)  # same size, other bytes
    puller = make_puller(tmp_path)
    with pytest.raises(RegistryError, match="digest mismatch") as caught:
        await lines(puller.pull(f"{registry.host}/library/tiny", insecure=True))
    assert model in caught.value.message and "nothing was installed" in caught.value.message
    assert not (puller.store.manifests / registry.host).exists()
    assert files(puller.store) == []  # no blob, no partial download


async def test_a_missing_model_fails_before_any_progress(
    registry: FakeRegistry, tmp_path: Path
) -> None:
    stream = make_puller(tmp_path).pull(f"{registry.host}/library/nope:7b", insecure=True)
    with pytest.raises(ModelNotFound) as caught:
        await anext(stream)
    assert caught.value.status == 404
    assert "nope:7b" in caught.value.message and "check the name" in caught.value.message


async def test_plain_http_needs_insecure(tmp_path: Path) -> None:
    name = ModelName.parse("http://127.0.0.1:1/library/m")
    with pytest.raises(InvalidRequest, match="insecure"):
        registry_base(name, "http://127.0.0.1:1/library/m", insecure=False)
    assert registry_base(name, "127.0.0.1:1/library/m", insecure=True) == "http://127.0.0.1:1"
    assert registry_base(name, "127.0.0.1:1/library/m", insecure=False).startswith("https://")


async def test_a_dropped_connection_resumes_with_range(
    registry: FakeRegistry, tmp_path: Path
) -> None:
    raw = publish_tiny(registry)
    model = json.loads(raw)["layers"][0]["digest"]
    registry.drop_after[model] = 1_500_000
    puller = make_puller(tmp_path, pull_part_min_mib=64)  # one part: one stream to break
    progress = await lines(puller.pull(f"{registry.host}/library/tiny", insecure=True))
    assert progress[-1] == {"status": "success"}
    ranges = [r.headers["range"] for r in registry.requests("GET", model[7:])]
    assert ranges[1] == f"bytes=0-{3 * MB - 1}" and len(ranges) == 3
    resumed_at = int(ranges[2][6:].split("-")[0])
    assert 1 * MB < resumed_at <= 1_500_000 and ranges[2].endswith(f"-{3 * MB - 1}")


async def test_a_cancelled_pull_resumes_where_it_stopped(
    registry: FakeRegistry, tmp_path: Path
) -> None:
    raw = publish_tiny(registry)
    model = json.loads(raw)["layers"][0]["digest"]
    registry.delay_per_chunk = 0.02
    puller = make_puller(tmp_path, pull_part_min_mib=64)
    stream = puller.pull(f"{registry.host}/library/tiny", insecure=True)
    async for line in stream:
        if line.digest == model and (line.completed or 0) > 300_000:
            break
    await stream.aclose()  # the only client left: the job is cancelled
    await asyncio.sleep(0.3)
    partial = puller.store.blobs / f"sha256-{model[7:]}-partial"
    assert partial.exists() and not puller.store.blob_path(model).exists()

    registry.delay_per_chunk = 0
    progress = await lines(puller.pull(f"{registry.host}/library/tiny", insecure=True))
    assert progress[-1] == {"status": "success"}
    first = next(p for p in progress if p.get("digest") == model)
    assert first["completed"] > 300_000  # the second pull started from the saved bytes
    last_range = registry.requests("GET", model[7:])[-1].headers["range"]
    assert int(last_range[6:].split("-")[0]) > 300_000
    assert not partial.exists()


async def test_bearer_challenge_and_cross_host_redirect(
    registry: FakeRegistry, tmp_path: Path
) -> None:
    raw = publish_tiny(registry, size=200_000)
    registry.token = "s3cret"
    registry.redirect = True
    puller = make_puller(tmp_path)
    progress = await lines(puller.pull(f"{registry.host}/library/tiny", insecure=True))
    assert progress[-1] == {"status": "success"}
    assert [r.path for r in registry.log[:3]] == [
        "/v2/library/tiny/manifests/latest",  # 401 with WWW-Authenticate
        "/token",
        "/v2/library/tiny/manifests/latest",  # retried with the token
    ]
    assert registry.log[2].headers["authorization"] == "Bearer s3cret"
    cdn = [r for r in registry.log if r.path.startswith("/cdn/")]
    assert cdn and all("authorization" not in r.headers for r in cdn)  # token stays home
    assert (
        puller.store.manifest_path(ModelName.parse(f"{registry.host}/library/tiny")).read_bytes()
        == raw
    )


async def test_concurrent_pulls_of_one_model_share_the_download(
    registry: FakeRegistry, tmp_path: Path
) -> None:
    raw = publish_tiny(registry)
    model = json.loads(raw)["layers"][0]["digest"]
    registry.delay_per_chunk = 0.002
    puller = make_puller(tmp_path, pull_part_min_mib=64)
    name = f"{registry.host}/library/tiny"
    first, second = await asyncio.gather(
        lines(puller.pull(name, insecure=True)), lines(puller.pull(name, insecure=True))
    )
    assert first[-1] == second[-1] == {"status": "success"}
    assert statuses(second)[0] == "pulling manifest"
    gets = [r for r in registry.requests("GET", model[7:]) if r.headers["range"] != "bytes=0-0"]
    assert len(gets) == 1
    assert len(registry.requests("GET", "/manifests/")) == 1


async def test_push_then_pull_back(registry: FakeRegistry, tmp_path: Path) -> None:
    source = ModelStore(tmp_path / "a")
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(tiny_gguf(300_000))
    name = ModelName.parse(f"{registry.host}/team/tiny:v1")
    source.import_gguf(name, gguf)
    settings = StoreSettings(registry_timeout=10)
    push = Push(source, settings, name, f"http://{registry.host}", insecure=True)
    reported: list[Progress] = []
    await push.run(reported.append)
    manifest = json.loads(source.manifest_path(name).read_bytes())
    assert statuses([p.wire() for p in reported]) == [
        "retrieving manifest",
        *[f"pushing {e['digest'][7:19]}" for e in [*manifest["layers"], manifest["config"]]],
        "pushing manifest",
        "success",
    ]
    assert registry.manifests[("team/tiny", "v1")] == source.manifest_path(name).read_bytes()
    assert registry.blobs[digest_of(gguf.read_bytes())] == gguf.read_bytes()

    again: list[Progress] = []
    await push.run(again.append)  # the registry has every blob now: none is sent again
    assert len(registry.requests("POST", "/blobs/uploads/")) == 2

    puller = make_puller(tmp_path / "b")
    progress = await lines(puller.pull(f"{registry.host}/team/tiny:v1", insecure=True))
    assert progress[-1] == {"status": "success"}
    assert puller.store.manifest_path(name).read_bytes() == source.manifest_path(name).read_bytes()


async def test_push_of_a_missing_model_is_a_404(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    with pytest.raises(ModelNotFound):
        Push(store, StoreSettings(), ModelName.parse("x/y/z"), "http://x", True)
