"""/api/pull, /api/push, /api/create and /api/blobs through a real llmux server, with
a real v2 registry on loopback serving the bundled model's bytes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmux.models.bundled import bundled_gguf
from tests.conftest import Server, start_server
from tests.support.gguf_variant import write_variant
from tests.support.registry import FakeRegistry, running_registry, tiny_gguf

pytestmark = pytest.mark.model
LONG_SYSTEM = "You are Captain Barnacle, a pirate who answers every question in rhyme. " * 6


@pytest.fixture(scope="module")
def registry() -> Iterator[FakeRegistry]:
    yield from running_registry()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "LLMUX_STORE__PULL_PART_MIN_MIB": "16",
        "LLMUX_ENGINE__KEEP_ALIVE": "30m",
        "LLMUX_ENGINE__NUM_CTX": "1024",
    }
    server = start_server(tmp_path_factory.mktemp("models-home"), extra_env=env)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(srv: Server) -> Iterator[httpx.Client]:
    with srv.client() as client:
        yield client


@pytest.fixture(scope="module")
def weights() -> bytes:
    path = bundled_gguf()
    assert path is not None
    return path.read_bytes()


def stream_lines(api: httpx.Client, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with api.stream("POST", path, json=body) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in response.iter_lines() if line]


def folded(lines: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for line in lines:
        if not out or out[-1] != line.get("status"):
            out.append(line.get("status", f"error: {line.get('error')}"))
    return out


def prompt_text(api: httpx.Client, vocab: Any, model: str, prompt: str = "Hi") -> str:
    """What the model was shown: /api/generate's context, detokenized."""
    reply = api.post(
        "/api/generate",
        json={"model": model, "prompt": prompt, "stream": False, "options": {"num_predict": 1}},
    )
    assert reply.status_code == 200, reply.text
    return bytes(vocab.detokenize(reply.json()["context"])).decode("utf-8", "replace")


def test_pull_streams_the_ollama_sequence_then_lists_shows_and_chats(
    api: httpx.Client, srv: Server, registry: FakeRegistry, weights: bytes, vocab: Any
) -> None:
    layers = {
        "system": LONG_SYSTEM.encode(),
        "params": json.dumps({"num_predict": 3, "temperature": 0}).encode(),
    }
    raw = registry.publish("library/pirate", "latest", weights, layers)
    manifest = json.loads(raw)
    name = f"{registry.host}/library/pirate:latest"

    lines = stream_lines(api, "/api/pull", {"model": name, "insecure": True})
    digests = [e["digest"] for e in [*manifest["layers"], manifest["config"]]]
    assert folded(lines) == [
        "pulling manifest",
        *[f"pulling {d[7:19]}" for d in digests],
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]
    first = next(line for line in lines if line.get("digest") == digests[0])
    assert first["total"] == len(weights) and "completed" in first

    store = srv.home / "models"
    assert (
        store / "manifests" / registry.host / "library" / "pirate" / "latest"
    ).read_bytes() == raw
    for digest in digests:
        blob = store / "blobs" / f"sha256-{digest[7:]}"
        assert "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest() == digest

    tags = {m["name"]: m for m in api.get("/api/tags").json()["models"]}
    assert tags[name]["digest"] == hashlib.sha256(raw).hexdigest()
    show = api.post("/api/show", json={"model": name}).json()
    assert show["system"] == LONG_SYSTEM
    assert "num_predict" in show["parameters"] and "temperature" in show["parameters"]
    assert f'SYSTEM """{LONG_SYSTEM}"""' in show["modelfile"]

    reply = api.post(
        "/api/chat",
        json={"model": name, "messages": [{"role": "user", "content": "Hi"}], "stream": False},
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["eval_count"] <= 3  # the params layer's num_predict
    assert "Captain Barnacle" in prompt_text(api, vocab, name)  # the system layer

    again = api.post("/api/pull", json={"model": name, "insecure": True, "stream": False})
    assert again.status_code == 200 and again.json() == {"status": "success"}


def test_pull_errors_keep_their_status_and_install_nothing(
    api: httpx.Client, srv: Server, registry: FakeRegistry
) -> None:
    ghost = {"model": f"{registry.host}/library/ghost", "insecure": True}
    missing = api.post("/api/pull", json={**ghost, "stream": False})
    assert missing.status_code == 404
    assert "ghost" in missing.json()["error"] and "not found" in missing.json()["error"]
    streamed = api.post("/api/pull", json=ghost)  # as Ollama: 200, then an error line
    lines = [json.loads(x) for x in streamed.text.splitlines()]
    assert streamed.status_code == 200 and lines[0] == {"status": "pulling manifest"}
    assert len(lines) == 2 and "ghost" in lines[1]["error"] and "not found" in lines[1]["error"]
    assert api.post("/api/pull", json={}).status_code == 400

    raw = registry.publish("library/bad", "latest", tiny_gguf(2_000_000))
    model = json.loads(raw)["layers"][0]["digest"]
    registry.tampered[model] = tiny_gguf(2_000_000, seed=9)
    name = f"{registry.host}/library/bad"
    lines = stream_lines(api, "/api/pull", {"model": name, "insecure": True})
    assert "digest mismatch" in lines[-1]["error"]
    assert folded(lines)[0] == "pulling manifest"
    failed = api.post("/api/pull", json={"model": name, "insecure": True, "stream": False})
    assert failed.status_code == 502 and "digest mismatch" in failed.json()["error"]
    store = srv.home / "models"
    assert not (store / "manifests" / registry.host / "library" / "bad").exists()
    assert not list((store / "blobs").glob(f"sha256-{model[7:]}*"))
    assert name not in {m["name"] for m in api.get("/api/tags").json()["models"]}


def test_blobs_head_and_post_check_the_digest(api: httpx.Client) -> None:
    data = b"some bytes for a blob"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert api.head(f"/api/blobs/{digest}").status_code == 404
    wrong = api.post(f"/api/blobs/sha256:{'0' * 64}", content=data)
    assert wrong.status_code == 400 and "digest mismatch" in wrong.json()["error"]
    assert api.head(f"/api/blobs/sha256:{'0' * 64}").status_code == 404
    assert api.post(f"/api/blobs/{digest}", content=data).status_code == 201
    assert api.head(f"/api/blobs/{digest}").status_code == 200
    assert api.post(f"/api/blobs/{digest}", content=data).status_code == 200
    assert api.head("/api/blobs/sha256:nothex").status_code == 400


def test_create_from_an_uploaded_gguf_with_every_layer(
    api: httpx.Client, weights: bytes, vocab: Any
) -> None:
    digest = "sha256:" + hashlib.sha256(weights).hexdigest()
    assert api.post(f"/api/blobs/{digest}", content=weights).status_code in (200, 201)
    body = {
        "model": "tutor",
        "files": {"model.gguf": digest},
        "system": "You are a patient maths tutor named Ada.",
        "parameters": {"num_predict": 2, "stop": ["<|im_end|>"]},
        "messages": [
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "It is four, my friend."},
        ],
        "license": "MIT",
        "template": "{{ .System }} {{ .Prompt }}",
    }
    lines = stream_lines(api, "/api/create", body)
    assert folded(lines)[:2] == ["parsing GGUF", f"using existing layer {digest}"]
    assert folded(lines)[-2:] == ["writing manifest", "success"]
    assert sum(line["status"].startswith("creating new layer") for line in lines) == 5

    show = api.post("/api/show", json={"model": "tutor"}).json()
    assert show["system"] == body["system"] and show["license"] == "MIT"
    assert show["template"] == body["template"]
    assert show["messages"] == body["messages"]
    assert "num_predict" in show["parameters"] and "MESSAGE assistant" in show["modelfile"]

    reply = api.post(
        "/api/chat",
        json={"model": "tutor", "messages": [{"role": "user", "content": "Hi"}], "stream": False},
    ).json()
    assert reply["eval_count"] <= 2
    # the template layer, not the GGUF's own template, renders the prompt (as Ollama):
    # this one shows the system prompt and the last user message only
    shown = prompt_text(api, vocab, "tutor")
    assert "You are a patient maths tutor named Ada. Hi" in shown
    assert "It is four, my friend." not in shown and "<|im_start|>" not in shown


def test_create_renders_a_go_template_when_the_gguf_has_none(
    api: httpx.Client, tmp_path: Path, vocab: Any
) -> None:
    source = bundled_gguf()
    assert source is not None
    variant = tmp_path / "plain.gguf"
    write_variant(source, variant, {"tokenizer.chat_template": ""})
    data = variant.read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert api.post(f"/api/blobs/{digest}", content=data).status_code == 201
    template = (
        "{{ if .System }}<<SYS>>{{ .System }}<</SYS>>{{ end }}"
        "{{ range .Messages }}[{{ .Role }}] {{ .Content }} {{ end }}[assistant]"
    )
    body = {
        "model": "plain",
        "files": {"p.gguf": digest},
        "template": template,
        "system": "Be brief.",
    }
    created = api.post("/api/create", json={**body, "stream": False})
    assert created.status_code == 200 and created.json() == {"status": "success"}
    shown = prompt_text(api, vocab, "plain", "Hello there")
    assert "<<SYS>>Be brief.<</SYS>>[system] Be brief. [user] Hello there [assistant]" in shown


def test_create_from_a_model_merges_params_and_quantizes(api: httpx.Client) -> None:
    body = {
        "model": "smol-q8",
        "from": "smollm2:135m",
        "quantize": "q8_0",
        "parameters": {"temperature": 0.1},
        "stream": False,
    }
    created = api.post("/api/create", json=body)
    assert created.status_code == 200, created.text
    show = api.post("/api/show", json={"model": "smol-q8"}).json()
    assert show["details"]["quantization_level"] == "Q8_0"
    reply = api.post(
        "/api/generate",
        json={"model": "smol-q8", "prompt": "Hi", "stream": False, "options": {"num_predict": 2}},
    )
    assert reply.status_code == 200 and reply.json()["eval_count"] <= 2

    lines = stream_lines(api, "/api/create", {"model": "smol-t", "from": "smol-q8", "system": "x"})
    using = [line["status"] for line in lines if line["status"].startswith("using existing")]
    assert len(using) == 3  # the quantized weights, the template and the params are reused
    assert "temperature" in api.post("/api/show", json={"model": "smol-t"}).json()["parameters"]


def test_create_errors_name_the_fix(api: httpx.Client) -> None:
    missing = api.post("/api/create", json={"model": "x", "from": "nope:1b"})
    assert missing.status_code == 404 and "llmux pull nope:1b" in missing.json()["error"]
    no_blob = api.post(
        "/api/create", json={"model": "x", "files": {"a.gguf": f"sha256:{'1' * 64}"}}
    )
    assert no_blob.status_code == 400 and "POST /api/blobs/" in no_blob.json()["error"]
    nothing = api.post("/api/create", json={"model": "x"})
    assert nothing.status_code == 400 and "'from'" in nothing.json()["error"]
    bad_q = api.post("/api/create", json={"model": "x", "from": "smollm2:135m", "quantize": "q9"})
    assert bad_q.status_code == 400 and "q4_k_m" in bad_q.json()["error"]
    text = b"not a gguf at all"
    digest = "sha256:" + hashlib.sha256(text).hexdigest()
    api.post(f"/api/blobs/{digest}", content=text)
    lines = stream_lines(api, "/api/create", {"model": "x", "files": {"a.bin": digest}})
    assert "not a GGUF file" in lines[-1]["error"]


def test_push_to_the_registry_then_pull_back(
    api: httpx.Client, srv: Server, registry: FakeRegistry
) -> None:
    target = f"{registry.host}/school/smol:course1"
    assert (
        api.post(
            "/api/create",
            json={
                "model": target,
                "from": "smollm2:135m",
                "system": "Course 1 assistant.",
                "stream": False,
            },
        ).status_code
        == 200
    )
    lines = stream_lines(api, "/api/push", {"model": target, "insecure": True})
    assert folded(lines)[0] == "retrieving manifest"
    assert folded(lines)[-2:] == ["pushing manifest", "success"]
    store = srv.home / "models"
    local = (store / "manifests" / registry.host / "school" / "smol" / "course1").read_bytes()
    assert registry.manifests[("school/smol", "course1")] == local

    assert api.request("DELETE", "/api/delete", json={"model": target}).status_code == 200
    pulled = api.post("/api/pull", json={"model": target, "insecure": True, "stream": False})
    assert pulled.status_code == 200
    assert api.post("/api/show", json={"model": target}).json()["system"] == "Course 1 assistant."


def test_the_official_ollama_client_pulls_uploads_and_creates(
    srv: Server, registry: FakeRegistry, tmp_path: Path
) -> None:
    import ollama

    registry.publish("library/clienttest", "v1", tiny_gguf(300_000, seed=5))
    client = ollama.Client(host=srv.url)
    name = f"{registry.host}/library/clienttest:v1"
    progress = [p.status for p in client.pull(name, insecure=True, stream=True)]
    assert progress[0] == "pulling manifest" and progress[-1] == "success"
    with pytest.raises(ollama.ResponseError) as caught:
        client.pull(f"{registry.host}/library/absent", insecure=True)
    assert caught.value.status_code == 404

    source = bundled_gguf()
    assert source is not None
    digest = client.create_blob(source)
    done = client.create("via-client", files={"m.gguf": digest}, system="Hello from the SDK")
    assert done.status == "success"
    assert "Hello from the SDK" in (client.show("via-client").modelfile or "")
