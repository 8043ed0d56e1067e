"""Traces: the real app (around a fake backend with engine-like timings) exports its
spans by OTLP/HTTP to a real receiver on loopback, which parses the protobuf the way a
collector does: one SERVER span per operation with the GenAI attributes, queue / load
/ prefill / decode children inside it, the caller's ``traceparent`` as its parent.
With the real SDK's in-memory exporter: the upstream child, errors, cache hits and
sampling. Off (the default): not in the chain and OpenTelemetry never imported."""

from __future__ import annotations

import dataclasses
import itertools
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

from llmux.config import Settings
from llmux.core.chunks import ChatChunk, Metrics
from llmux.core.context import RequestContext
from llmux.core.request import ChatRequest
from llmux.errors import LlmuxError, RateLimited
from llmux.observability.settings import TracingSettings
from llmux.observability.tracing import Tracing, build, phases
from llmux.policies import Operation, Outcome, Usage
from llmux.services import build_tracing
from tests.support.fakes import FakeBackend
from tests.support.inprocess import in_process

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
MS = 1_000_000


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP traces endpoint: every POSTed export, parsed."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.exports: list[ExportTraceServiceRequest] = []
        self.paths: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, span) for every span received."""
        out = []
        for export in self.exports:
            for rs in export.resource_spans:
                resource = {a.key: value(a.value) for a in rs.resource.attributes}
                out += [(resource, s) for ss in rs.scope_spans for s in ss.spans]
        return out


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        assert self.headers["Content-Type"] == "application/x-protobuf"
        export = ExportTraceServiceRequest()
        export.ParseFromString(body)
        self.server.exports.append(export)
        self.server.paths.append(self.path)
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        return None


def value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def attrs(span: Any) -> dict[str, Any]:
    return {a.key: value(a.value) for a in span.attributes}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@dataclasses.dataclass
class TimedBackend(FakeBackend):
    """The fake backend, with the timings an engine reports in its final chunk."""

    timings: Metrics = dataclasses.field(
        default_factory=lambda: Metrics(load_ns=20 * MS, prompt_eval_ns=30 * MS, eval_ns=10 * MS)
    )

    async def chat(self, ctx: RequestContext, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        async for chunk in super().chat(ctx, request):
            if chunk.done and chunk.metrics is not None:
                t = self.timings
                chunk = dataclasses.replace(chunk, metrics=dataclasses.replace(
                    chunk.metrics, cached_tokens=1, load_ns=t.load_ns,
                    prompt_eval_ns=t.prompt_eval_ns, eval_ns=t.eval_ns,
                ))  # fmt: skip
            yield chunk


def chat(model: str = "fake:latest") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "two words please"}]}


def test_spans_reach_a_real_otlp_receiver(tmp_path: Path, receiver: Receiver) -> None:
    backend = TimedBackend()
    backend.reply("Hello", " world", delay_s=0.07)  # a first item after ~70 ms
    backend.reply("again")
    tracing = {"enabled": True, "endpoint": receiver.url, "service_name": "llmux-test"}
    with in_process(tmp_path, backend=backend, tracing=tracing) as app:
        assert any(isinstance(p, Tracing) for p in app.gateway.policies)
        parent = f"00-{TRACE_ID}-{PARENT_ID}-01"
        headers = {"traceparent": parent, "X-Request-Id": "traced-1"}
        r = app.client.post("/v1/chat/completions", json=chat(), headers=headers)
        assert r.status_code == 200
        r = app.client.post("/api/generate", json={"model": "fake:latest", "prompt": "hi"})
        assert r.status_code == 200
    # leaving the app flushed the batch (Services.aclose)
    assert receiver.paths and set(receiver.paths) == {"/v1/traces"}
    spans = receiver.spans()
    assert {r["service.name"] for r, _ in spans} == {"llmux-test"}
    by_name = {s.name: s for _, s in spans}
    roots = [s for _, s in spans if s.kind == s.SPAN_KIND_SERVER]
    assert sorted(s.name for s in roots) == ["chat fake:latest", "text_completion fake:latest"]
    root = by_name["chat fake:latest"]
    assert root.trace_id.hex() == TRACE_ID and root.parent_span_id.hex() == PARENT_ID
    a = attrs(root)
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "llmux"
    assert a["gen_ai.request.model"] == a["gen_ai.response.model"] == "fake:latest"
    assert a["gen_ai.usage.input_tokens"] == 3 and a["gen_ai.usage.output_tokens"] == 2
    assert a["gen_ai.usage.cache_read.input_tokens"] == 1
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["llmux.request_id"] == "traced-1" and a["llmux.api"] == "openai"
    assert a["llmux.route"] == "/v1/chat/completions" and a["http.response.status_code"] == 200
    assert a["server.address"] == "127.0.0.1" and a["server.port"] == 11434
    assert "error.type" not in a and root.status.code == root.status.STATUS_CODE_UNSET
    children = sorted(
        (s for _, s in spans if s.parent_span_id == root.span_id),
        key=lambda s: s.start_time_unix_nano,
    )
    assert [c.name for c in children] == ["queue", "load", "prefill", "decode"]
    assert all(c.trace_id == root.trace_id and c.kind == c.SPAN_KIND_INTERNAL for c in children)
    assert children[0].start_time_unix_nano == root.start_time_unix_nano
    assert children[-1].end_time_unix_nano == root.end_time_unix_nano
    for before, after in itertools.pairwise(children):
        assert before.end_time_unix_nano == after.start_time_unix_nano  # back to back
    load, prefill = children[1], children[2]
    assert load.end_time_unix_nano - load.start_time_unix_nano == pytest.approx(20 * MS, abs=2)
    assert prefill.end_time_unix_nano - prefill.start_time_unix_nano == pytest.approx(
        30 * MS, abs=2
    )
    assert attrs(prefill)["gen_ai.usage.input_tokens"] == 3
    assert attrs(children[3])["gen_ai.usage.output_tokens"] == 2
    first_item = root.start_time_unix_nano + a["llmux.time_to_first_token_s"] * 1e9
    assert prefill.end_time_unix_nano == pytest.approx(first_item, abs=2 * MS)
    other = by_name["text_completion fake:latest"]
    assert other.trace_id.hex() != TRACE_ID and not other.parent_span_id  # a trace of its own


def test_the_identity_layer_keeps_the_traceparent(tmp_path: Path) -> None:
    backend = FakeBackend()
    with in_process(tmp_path, backend=backend) as app:
        parent = f"00-{TRACE_ID}-{PARENT_ID}-01"
        app.client.post("/api/chat", json=chat(), headers={"traceparent": parent})
        app.client.post("/api/chat", json=chat())
    seen = [c.ctx.facts.get("traceparent") for c in backend.calls_of("chat") if c.ctx]
    assert seen == [parent, None]


def test_off_by_default_not_in_the_chain_and_never_imported(tmp_path: Path) -> None:
    assert build_tracing(Settings(home=tmp_path)) is None
    with in_process(tmp_path) as app:
        assert not any(isinstance(p, Tracing) for p in app.gateway.policies)
    script = (
        "import sys\n"
        "from llmux.config import Settings\n"
        "from llmux.server.app import create_app\n"
        "from llmux.services import build_services\n"
        f"s = Settings(home={str(tmp_path / 'home')!r})\n"
        "services = build_services(s)\n"
        "create_app(s, services)\n"
        "assert not any(p.__class__.__name__ == 'Tracing' for p in services.gateway.policies)\n"
        "ours = ('opentelemetry.exporter', 'llmux.observability.tracing')\n"
        "print(sorted(m for m in sys.modules if m.startswith(ours)))\n"
    )  # (FastAPI brings the OpenTelemetry API, and redis the SDK when it is installed)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]"


def test_enabled_without_the_extra_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(sys.modules, "llmux.observability.tracing")
    exporter = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
    monkeypatch.setitem(sys.modules, exporter, None)  # as if the extra were not installed
    with pytest.raises(LlmuxError, match=r"pip install 'llmux\[otel\]'"):
        build_tracing(Settings(home=tmp_path, tracing={"enabled": True}))


# -- the policy with the SDK's in-memory exporter --------------------------------------


def finished(tracing: Tracing, ctx: RequestContext, op: Operation, outcome: Outcome) -> list[Any]:
    exporter: InMemorySpanExporter = tracing.exporter  # type: ignore[attr-defined]
    tracing.finished(ctx, op, outcome)
    tracing.provider.force_flush()
    return list(exporter.get_finished_spans())


@pytest.fixture
def memory() -> Iterator[Tracing]:
    exporter = InMemorySpanExporter()
    tracing = build(TracingSettings(enabled=True), "llmux.internal", 8080, exporter=exporter)
    tracing.exporter = exporter  # type: ignore[attr-defined]
    yield tracing
    tracing.close()


def test_an_upstream_member_is_a_client_child(memory: Tracing) -> None:
    ctx = RequestContext("openai", "/v1/chat/completions")
    ctx.facts.update(upstream="up-a", backend_ttft_s=0.05)
    op = Operation("chat", "remote", backend="pool")
    metrics = Metrics(prompt_eval_ns=5 * MS)  # the upstream's own, not our engine's phases
    outcome = Outcome(Usage(3, 4), "stop", latency_s=0.2, ttft_s=0.1, metrics=metrics)
    spans = finished(memory, ctx, op, outcome)
    root = next(s for s in spans if s.kind == SpanKind.SERVER)
    (child,) = [
        s for s in spans if s.parent is not None and s.parent.span_id == root.context.span_id
    ]
    assert child.name == "upstream up-a" and child.kind == SpanKind.CLIENT
    assert child.attributes["llmux.upstream"] == "up-a"
    assert child.attributes["llmux.time_to_first_token_s"] == 0.05
    assert root.attributes["llmux.upstream"] == "up-a" and root.attributes["server.port"] == 8080
    assert (child.start_time, child.end_time) == (root.start_time, root.end_time)
    relay = finished(memory, ctx, Operation("chat", "remote", backend="relay"), outcome)
    assert "upstream up-a" in [s.name for s in relay[len(spans) :]]


def test_errors_cancels_and_cache_hits(memory: Tracing) -> None:
    ctx = RequestContext("ollama", "/api/chat")
    op = Operation("chat", "m", backend="local")
    refused = Outcome(error=RateLimited("slow down"), latency_s=0.01)
    (span,) = finished(memory, ctx, op, refused)
    assert span.status.status_code == StatusCode.ERROR and span.status.description == "rate_limited"
    assert span.attributes["error.type"] == "rate_limited"
    assert span.attributes["http.response.status_code"] == 429
    hit = Outcome(
        Usage(5, 5), "stop", latency_s=0.01, ttft_s=0.001, cache="l1", metrics=Metrics(eval_ns=MS)
    )
    spans = finished(memory, ctx, op, hit)
    assert [s.name for s in spans[1:]] == ["chat m"]  # a replay has no engine phases
    assert spans[1].attributes["llmux.cache"] == "l1"
    gone = finished(memory, ctx, op, Outcome(cancelled=True, latency_s=0.01))
    assert gone[-1].attributes["llmux.cancelled"] is True
    assert gone[-1].attributes["http.response.status_code"] == 499
    embed = finished(
        memory, RequestContext("openai", "/v1/embeddings"), Operation("embed", "e"), Outcome()
    )
    assert embed[-1].name == "embeddings e"


def test_sampling_follows_the_caller_else_the_ratio() -> None:
    exporter = InMemorySpanExporter()
    tracing = build(TracingSettings(enabled=True, sample_ratio=0.0), exporter=exporter)
    op, outcome = Operation("chat", "m", backend="local"), Outcome(latency_s=0.01)
    try:
        tracing.finished(RequestContext("ollama", "/api/chat"), op, outcome)
        sampled = RequestContext("ollama", "/api/chat")
        sampled.facts["traceparent"] = f"00-{TRACE_ID}-{PARENT_ID}-01"
        tracing.finished(sampled, op, outcome)
        unsampled = RequestContext("ollama", "/api/chat")
        unsampled.facts["traceparent"] = f"00-{TRACE_ID}-{PARENT_ID}-00"
        tracing.finished(unsampled, op, outcome)
        garbage = RequestContext("ollama", "/api/chat")
        garbage.facts["traceparent"] = "not a traceparent"
        tracing.finished(garbage, op, outcome)  # a root then, and sampled out at ratio 0
        tracing.provider.force_flush()
    finally:
        tracing.close()
    (span,) = exporter.get_finished_spans()
    assert f"{span.context.trace_id:032x}" == TRACE_ID


def test_phases_are_laid_out_from_the_first_item() -> None:
    m = Metrics(load_ns=100 * MS, prompt_eval_ns=200 * MS, eval_ns=300 * MS)
    assert phases(0.0, 1.0, 0.5, m) == [
        ("queue", 0.0, pytest.approx(0.2)), ("load", pytest.approx(0.2), pytest.approx(0.3)),
        ("prefill", pytest.approx(0.3), 0.5), ("decode", 0.5, 1.0),
    ]  # fmt: skip
    # no first item (nothing generated): the prefill ends where the decode time begins
    assert phases(0.0, 1.0, None, m)[-2:] == [
        ("prefill", pytest.approx(0.5), pytest.approx(0.7)), ("decode", pytest.approx(0.7), 1.0),
    ]  # fmt: skip
    # timings longer than the operation are clipped to it, and a zero load is no span
    assert [p[0] for p in phases(0.0, 0.1, 0.05, Metrics(prompt_eval_ns=10**9))] == [
        "prefill", "decode",
    ]  # fmt: skip
