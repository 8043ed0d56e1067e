"""The Host and Origin checks (issue 21, items 19 and 22), in-process."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from llmux.server.guard import DEFAULT_ORIGINS, HostCheck, origin_regex
from tests.support.inprocess import in_process


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://localhost:3000", True),
        ("http://localhost", True),
        ("https://127.0.0.1:8443", True),
        ("http://localhost:3000.evil.com", False),
        ("http://localhost:.evil.com", False),
        ("http://localhost:3000@evil.com", False),
        ("http://127.0.0.1:1.evil.com", False),
        ("app://anything", True),
    ],
)
def test_a_port_wildcard_matches_digits_only(origin: str, allowed: bool) -> None:
    assert bool(re.match(origin_regex(DEFAULT_ORIGINS), origin)) is allowed


def test_the_cors_layer_and_the_guard_refuse_a_look_alike_origin(tmp_path: Path) -> None:
    with in_process(tmp_path) as app:
        evil = app.client.get("/api/tags", headers={"Origin": "http://localhost:3000.evil.com"})
        assert evil.status_code == 403 and "access-control-allow-origin" not in evil.headers
        ok = app.client.get("/api/tags", headers={"Origin": "http://localhost:3000"})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "http://localhost:3000"


@pytest.mark.parametrize(
    ("bind", "allowed_hosts", "host", "ok"),
    [
        ("127.0.0.1:11434", [], "localhost:11434", True),
        ("127.0.0.1:11434", [], "evil.example.com", False),
        ("127.0.0.1:11434", [], "8.8.8.8:11434", False),
        ("127.0.0.1:11434", ["llm.example.com"], "llm.example.com", True),
        ("0.0.0.0:11434", [], "evil.example.com", False),
        ("0.0.0.0:11434", [], "evil.example.com:11434", False),
        ("0.0.0.0:11434", [], "8.8.8.8:11434", True),
        ("0.0.0.0:11434", [], "[2001:db8::1]:11434", True),
        ("0.0.0.0:11434", [], "192.168.1.20:11434", True),
        ("0.0.0.0:11434", [], "myhost.local", True),
        ("0.0.0.0:11434", ["llm.example.com"], "LLM.example.com:443", True),
        ("0.0.0.0:11434", ["*.example.com"], "a.b.example.com", True),
        ("0.0.0.0:11434", ["*.example.com"], "example.com.evil.net", False),
        ("0.0.0.0:11434", ["*"], "anything.at.all", True),
        ("llm.example.org:11434", [], "llm.example.org:11434", True),
        ("llm.example.org:11434", [], "evil.example.org", False),
    ],
)
def test_the_host_check_stays_on_for_every_bind(
    tmp_path: Path, bind: str, allowed_hosts: list[str], host: str, ok: bool
) -> None:
    # beyond loopback access control must be on (or explicitly off); the Host check
    # holds either way (/api/version needs no credential)
    for auth in ("on", "off"):
        settings = {"server": {"allowed_hosts": allowed_hosts}, "auth": {"mode": auth}}
        with in_process(tmp_path / auth, host=bind, **settings) as app:
            r = app.client.get("/api/version", headers={"Host": host})
            assert r.status_code == (200 if ok else 403), r.text


def test_a_public_bind_warns_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.WARNING, "llmux.server.app"),
        in_process(tmp_path, host="0.0.0.0:11434", auth={"mode": "on"}),
    ):
        pass
    assert any("reachable from the network" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, "llmux.server.app"), in_process(tmp_path):
        pass
    assert not any("reachable" in r.getMessage() for r in caplog.records)


def test_allowed_hosts_reads_a_comma_separated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmux.config import Settings

    monkeypatch.setenv("LLMUX_SERVER__ALLOWED_HOSTS", "a.example.com, *.b.example.com")
    assert Settings().server.allowed_hosts == ["a.example.com", "*.b.example.com"]
    check = HostCheck(Settings().server.allowed_hosts)
    assert check("a.example.com:80") and check("x.b.example.com") and not check("c.example.com")
