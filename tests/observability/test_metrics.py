"""/metrics in process, over a fake backend: what each model operation adds, the
policies' counts, bounded labels, and who may read the page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmux.config import PriceSettings, PricesSettings
from llmux.policies.settings import ModerationSettings, RedactionSettings
from tests.support.inprocess import App, in_process
from tests.support.scrape import scrape, value

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "stream": False}


def chat(app: App, **body: Any) -> int:
    r = app.client.post("/api/chat", json={**CHAT, **body})
    return r.status_code


def oa_chat(app: App, **body: Any) -> int:
    r = app.client.post("/v1/chat/completions", json={**CHAT, **body})
    return r.status_code


def test_a_request_is_counted_timed_and_its_tokens_added(tmp_path: Path) -> None:
    with in_process(tmp_path, observe=True) as app:
        app.backend.reply("one ", "two ", "three")
        assert chat(app) == 200
        assert oa_chat(app, model="missing-model") == 404
        s = scrape(app.client)
    ok = {"api": "ollama", "route": "/api/chat", "model": "fake:latest", "status": "200"}
    assert value(s, "llmux_requests_total", **ok) == 1
    missing = {"api": "openai", "route": "/v1/chat/completions", "model": "other"}
    assert value(s, "llmux_requests_total", **missing, status="404") == 1
    assert value(s, "llmux_tokens_total", model="fake:latest", type="completion") == 3
    assert value(s, "llmux_tokens_total", model="fake:latest", type="prompt") == 1
    assert value(s, "llmux_request_duration_seconds_count", model="fake:latest") == 1
    assert value(s, "llmux_time_to_first_token_seconds_count", model="fake:latest") == 1
    assert value(s, "llmux_time_to_first_token_seconds_bucket", le="0.8") == 1  # the rule's bucket
    assert value(s, "llmux_gateway_overhead_seconds_count", api="ollama") == 1
    assert value(s, "llmux_time_per_output_token_seconds_count", model="fake:latest") == 1
    assert value(s, "llmux_requests_in_flight") == 0
    genai = {"gen_ai_operation_name": "chat", "gen_ai_request_model": "fake:latest"}
    assert value(s, "gen_ai_server_time_to_first_token_seconds_count", **genai) == 1
    assert value(s, "gen_ai_client_token_usage_sum", **genai, gen_ai_token_type="output") == 3
    assert value(s, "llmux_http_requests_total", route="/api/chat", status="200") == 1
    assert value(s, "llmux_http_requests_total", route="/v1/chat/completions", status="404") == 1
    assert value(s, "llmux_build_info") == 1
    assert not any(name.endswith("_created") for name, _ in s)


def test_paths_no_route_has_are_one_series(tmp_path: Path) -> None:
    with in_process(tmp_path, observe=True) as app:
        for i in range(50):
            assert app.client.get(f"/no/such/path/{i}").status_code == 404
        s = scrape(app.client)
    assert value(s, "llmux_http_requests_total", route="other", status="404") == 50
    assert not any(dict(labels).get("route", "").startswith("/no/") for _, labels in s)


def test_errors_mid_stream_and_embeddings_are_counted(tmp_path: Path) -> None:
    from llmux.errors import BackendError

    with in_process(tmp_path, observe=True) as app:
        app.backend.reply("a", "b", error=BackendError("boom"), error_after=1)
        r = app.client.post("/api/chat", json={**CHAT, "stream": True})
        assert r.status_code == 200 and "boom" in r.text
        r = app.client.post("/v1/embeddings", json={"model": "fake", "input": ["x", "y"]})
        assert r.status_code == 200
        s = scrape(app.client)
    # a stream that failed part-way counts with its error's status (the HTTP one was 200)
    assert value(s, "llmux_requests_total", route="/api/chat", status="500") == 1
    assert value(s, "llmux_requests_total", route="/v1/embeddings", status="200") == 1
    emb = {"gen_ai_operation_name": "embeddings", "gen_ai_token_type": "input"}
    assert value(s, "gen_ai_client_token_usage_count", **emb) == 1


def test_refusals_redactions_verdicts_and_spend(tmp_path: Path) -> None:
    prices = PricesSettings(
        currency="CNY", models={"fake:latest": PriceSettings(input=2, output=8)}
    )
    settings: dict[str, Any] = {
        "limits": {"requests_per_minute": 3},
        "prices": prices,
        "redaction": RedactionSettings(enabled=True),
        "moderation": ModerationSettings(enabled=True, words={"violence": ["kill them"]}),
    }
    with in_process(tmp_path, observe=True, quotas=True, **settings) as app:
        phone = "my phone is 13800138000 and mail li.lei@example.com"
        assert chat(app, messages=[{"role": "user", "content": phone}]) == 200
        assert chat(app, messages=[{"role": "user", "content": "please kill them"}]) == 400
        assert chat(app) == 200
        assert chat(app) == 429
        s = scrape(app.client)
    assert value(s, "llmux_refusals_total", reason="rate_limit") == 1
    assert value(s, "llmux_refusals_total", reason="content_filter") == 1
    assert value(s, "llmux_redactions_total", entity="phone") == 1
    assert value(s, "llmux_redactions_total", entity="email") == 1
    assert value(s, "llmux_moderation_verdicts_total", verdict="flagged") == 1
    assert value(s, "llmux_moderation_verdicts_total", verdict="allowed") == 2
    assert value(s, "llmux_spend_total", currency="CNY") > 0
    assert value(s, "llmux_requests_total", status="429") == 1
    assert ("llmux_usage_queue_depth", frozenset()) in s


def _auth(app: App, role: str) -> str:
    from tests.auth.test_access import call, key_for

    user = call(app, app.access.add_user, f"u-{role}", "correct horse battery", role)
    return key_for(app, user)


def test_metrics_need_the_scope_or_the_scrape_token(tmp_path: Path) -> None:
    auth = {"mode": "on", "max_failures": 1000}
    with in_process(tmp_path, observe=True, auth=auth) as app:
        assert app.client.get("/metrics").status_code == 401
        user = _auth(app, "user")
        r = app.client.get("/metrics", headers={"Authorization": f"Bearer {user}"})
        assert r.status_code == 403 and "metrics" in r.text
        admin = _auth(app, "admin")
        assert app.client.get("/metrics", headers={"Authorization": f"Bearer {admin}"}).status_code == 200  # fmt: skip
        wrong = app.client.get("/metrics", headers={"Authorization": "Bearer scrape-me-not"})
        assert wrong.status_code == 401


def test_the_scrape_token_opens_metrics_only(tmp_path: Path) -> None:
    auth = {"mode": "on", "max_failures": 1000}
    token = "scrape-token-0123456789"
    with in_process(tmp_path, observe=True, auth=auth, metrics={"token": token}) as app:
        bearer = {"Authorization": f"Bearer {token}"}
        assert app.client.get("/metrics", headers=bearer).status_code == 200
        assert app.client.post("/api/chat", json=CHAT, headers=bearer).status_code == 401
        assert app.client.get("/api/tags", headers=bearer).status_code == 401


def test_metrics_off_is_404_and_counts_nothing(tmp_path: Path) -> None:
    with in_process(tmp_path) as app:
        assert chat(app) == 200
        r = app.client.get("/metrics")
        assert r.status_code == 404 and "metrics" in r.text
