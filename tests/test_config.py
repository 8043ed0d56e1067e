"""Settings: overrides > LLMUX_* environment > TOML file > defaults."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from llmux.config import load_settings, parse_host


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("LLMUX_"):
            monkeypatch.delenv(key)


def test_defaults() -> None:
    s = load_settings()
    assert s.bind == ("127.0.0.1", 11434) and s.keep_alive_seconds == 300
    assert s.models_dir == Path("~/.llmux/models").expanduser()
    assert s.reasoning_fields == ["reasoning_content"] and s.aliases == {}


def test_priority_of_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "llmux.toml"
    config.write_text(
        'num_ctx = 1024\nmax_queue = 7\nkeep_alive = "1h"\n[aliases]\n"Deepseek-Chat" = "smollm2:135m"\n'
    )
    monkeypatch.setenv("LLMUX_MAX_QUEUE", "9")
    s = load_settings(config, num_ctx=2048)
    assert s.num_ctx == 2048, "flags win"
    assert s.max_queue == 9, "then the environment"
    assert s.keep_alive_seconds == 3600 and s.aliases == {"Deepseek-Chat": "smollm2:135m"}, (
        "then the file"
    )
    monkeypatch.setenv("LLMUX_CONFIG", str(config))
    assert load_settings().num_ctx == 1024


def test_environment_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMUX_KEEP_ALIVE", "-1")
    monkeypatch.setenv("LLMUX_ORIGINS", "chrome-extension://*, https://app.example")
    monkeypatch.setenv("LLMUX_REASONING_FIELDS", '["reasoning"]')
    monkeypatch.setenv("LLMUX_HOST", "0.0.0.0:8080")
    s = load_settings()
    assert s.keep_alive_seconds == math.inf and s.reasoning_fields == ["reasoning"]
    assert s.origins == ["chrome-extension://*", "https://app.example"]
    assert s.bind == ("0.0.0.0", 8080) and s.base_url == "http://127.0.0.1:8080"


@pytest.mark.parametrize(
    "bad",
    [{"keep_alive": "soon"}, {"num_ctx": 10}, {"reasoning_fields": ["thoughts"]}, {"max_queue": 0}],
)
def test_bad_values_are_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        load_settings(**bad)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ("127.0.0.1", 11434)),
        ("example.com", ("example.com", 11434)),
        (":9000", ("127.0.0.1", 9000)),
        ("http://10.0.0.2:1234", ("10.0.0.2", 1234)),
        ("[::1]:5000", ("::1", 5000)),
    ],
)
def test_parse_host(text: str, expected: tuple[str, int]) -> None:
    assert parse_host(text) == expected


def test_parse_host_bad_port() -> None:
    with pytest.raises(ValueError):
        parse_host("localhost:http")
