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
    assert s.bind == ("127.0.0.1", 11434) and s.engine.keep_alive_seconds == 300
    assert s.models_dir == Path("~/.llmux/models").expanduser()
    assert s.server.reasoning_fields == ["reasoning_content"] and s.gateway.aliases == {}


def test_priority_of_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "llmux.toml"
    config.write_text(
        '[engine]\nnum_ctx = 1024\nmax_queue = 7\nkeep_alive = "1h"\n'
        '[gateway.aliases]\n"Deepseek-Chat" = "smollm2:135m"\n'
    )
    monkeypatch.setenv("LLMUX_ENGINE__MAX_QUEUE", "9")
    s = load_settings(config, engine={"num_ctx": 2048})
    assert s.engine.num_ctx == 2048, "flags win"
    assert s.engine.max_queue == 9, "then the environment"
    assert s.engine.keep_alive_seconds == 3600, "then the file"
    assert s.gateway.aliases == {"Deepseek-Chat": "smollm2:135m"}
    monkeypatch.setenv("LLMUX_CONFIG", str(config))
    assert load_settings().engine.num_ctx == 1024


def test_environment_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMUX_ENGINE__KEEP_ALIVE", "-1")
    monkeypatch.setenv("LLMUX_SERVER__ORIGINS", "chrome-extension://*, https://app.example")
    monkeypatch.setenv("LLMUX_SERVER__REASONING_FIELDS", '["reasoning"]')
    monkeypatch.setenv("LLMUX_HOST", "0.0.0.0:8080")
    s = load_settings()
    assert s.engine.keep_alive_seconds == math.inf and s.server.reasoning_fields == ["reasoning"]
    assert s.server.origins == ["chrome-extension://*", "https://app.example"]
    assert s.bind == ("0.0.0.0", 8080) and s.base_url == "http://127.0.0.1:8080"


def test_flat_names_still_work_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "old.toml"
    config.write_text('num_ctx = 1024\nmodels = "/srv/models"\n[aliases]\n"a" = "b"\n')
    monkeypatch.setenv("LLMUX_MAX_QUEUE", "9")
    monkeypatch.setenv("LLMUX_ORIGINS", '["app://*"]')
    monkeypatch.setenv("LLMUX_DATABASE_URL", "sqlite:////tmp/x.db")
    with pytest.warns(DeprecationWarning, match="sectioned form") as seen:
        s = load_settings(config, request_timeout=5)
    assert s.engine.num_ctx == 1024 and s.engine.max_queue == 9 and s.engine.request_timeout == 5
    assert s.models_dir == Path("/srv/models") and s.gateway.aliases == {"a": "b"}
    assert s.server.origins == ["app://*"] and s.storage.database_url == "sqlite:////tmp/x.db"
    text = " ".join(str(w.message) for w in seen)
    assert "num_ctx -> engine.num_ctx" in text and "max_queue -> engine.max_queue" in text


def test_sectioned_environment_beats_a_flat_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMUX_MAX_QUEUE", "9")
    monkeypatch.setenv("LLMUX_ENGINE__MAX_QUEUE", "11")
    with pytest.warns(DeprecationWarning):
        assert load_settings().engine.max_queue == 11


@pytest.mark.parametrize(
    "bad",
    [
        {"engine": {"keep_alive": "soon"}},
        {"engine": {"num_ctx": 10}},
        {"server": {"reasoning_fields": ["thoughts"]}},
        {"engine": {"max_queue": 0}},
        {"engine": {"no_such_key": 1}},
        {"batch": {"lease_s": 3, "check_s": 2}},
    ],
)
def test_bad_values_are_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        load_settings(**bad)


def test_an_unknown_section_in_the_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "llmux.toml"
    path.write_text('[database]\nurl = "postgresql://db/llmux"\n[engine]\nnum_ctx = 2048\n')
    with pytest.raises(ValueError, match="unknown section or key 'database'"):
        load_settings(path)
    path.write_text("num_ctx = 2048\n[engine]\nmax_queue = 3\n")  # a flat name still works
    with pytest.warns(DeprecationWarning):
        assert load_settings(path).engine.num_ctx == 2048


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


def test_every_setting_is_documented() -> None:
    """docs/configuration.md names the environment variable of every sectioned setting."""
    from pathlib import Path

    from pydantic import BaseModel

    from llmux.config import Settings

    doc = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    missing = []
    for section, field in Settings.model_fields.items():
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        for key in model.model_fields:
            name = f"LLMUX_{section.upper()}__{key.upper()}"
            if name not in doc and f"`{section}.{key}`" not in doc:
                missing.append(name)
    assert not missing, f"not in docs/configuration.md: {missing}"
