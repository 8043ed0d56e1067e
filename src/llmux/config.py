"""The one Settings object.

Sources, highest priority first: explicit overrides (CLI flags), environment variables
``LLMUX_*``, a TOML file (``--config`` or ``LLMUX_CONFIG``), defaults. It is built once
by :func:`load_settings` and passed down; nothing else reads ``os.environ``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from llmux.core.durations import parse_setting_duration
from llmux.errors import LlmuxError
from llmux.upstream.settings import GatewaySettings, UpstreamSettings

DEFAULT_PORT = 11434
ReasoningField = Literal["reasoning_content", "reasoning"]


def parse_host(value: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``:port`` or ``http://host:port`` -> (host, port)."""
    text = value.strip() or "127.0.0.1"
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    host = parts.hostname or "127.0.0.1"
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise ValueError(f"invalid port in host {value!r}") from exc
    return host, port


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LLMUX_", extra="ignore", env_nested_delimiter="__"
    )

    host: str = Field("127.0.0.1:11434", description="host:port to bind and to reach the server")
    home: Path = Field(Path("~/.llmux"), description="where all state lives")
    models: Path | None = Field(None, description="model store; default $LLMUX_HOME/models")
    config: Path | None = Field(None, description="TOML configuration file")

    keep_alive: str | int | float = Field("5m", description="how long an idle model stays loaded")
    num_ctx: int = Field(4096, ge=64)
    num_thread: int | None = Field(None, ge=1)
    num_gpu: int = -1
    num_parallel: int | None = Field(
        None, ge=1, le=64, description="sequences one model decodes together; None = auto"
    )
    parallel: dict[str, int] = Field(
        default_factory=dict, description="per-model num_parallel: model name -> slots"
    )
    flash_attention: bool = Field(
        True, description="llama.cpp flash attention where the backend supports it; false: off"
    )
    kv_budget_mib: int = Field(2048, ge=16, description="KV cache memory auto num_parallel may use")
    request_timeout: float | None = Field(
        None, gt=0, description="seconds a generation may take, queue included; None = no limit"
    )
    max_loaded_models: int = Field(3, ge=1)
    max_queue: int = Field(512, ge=1)
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)

    bundled_model: str = Field("smollm2:135m", description="name for the bundled GGUF; '' skips")
    origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="extra allowed CORS origins (list, or comma-separated)"
    )
    aliases: dict[str, str] = Field(default_factory=dict, description="exposed name -> model")
    upstreams: list[UpstreamSettings] = Field(
        default_factory=list, description="upstream servers ([[upstreams]] tables)"
    )
    gateway: GatewaySettings = Field(
        default_factory=GatewaySettings, description="upstream keep-alive and health checks"
    )
    reasoning_fields: list[ReasoningField] = Field(
        default_factory=lambda: list[ReasoningField](["reasoning_content"]),
        description="OpenAI-API field name(s) for the thinking trace: DeepSeek's and/or Ollama's",
    )
    balance_currency: str = Field("CNY", description="currency GET /user/balance reports")
    balance_total: str = Field("0.00", description="balance GET /user/balance reports, as a string")
    database_url: str | None = Field(
        None,
        description="conversation history database: sqlite:///PATH or postgresql://USER@HOST/DB;"
        " default $LLMUX_HOME/llmux.db",
    )
    pull_max_parts: int = Field(
        16, ge=1, le=64, description="ranged parts one blob download is split into, at most"
    )
    pull_part_min_mib: int = Field(
        100, ge=1, description="smallest ranged part of a blob download, in MiB"
    )
    registry_timeout: float = Field(
        30.0, gt=0, description="seconds to wait for a registry to connect or send more bytes"
    )
    hf_endpoint: str = Field(
        "https://huggingface.co", description="Hugging Face Hub URL that hf.co/ names pull from"
    )
    log_level: str = "info"

    @field_validator("keep_alive")
    @classmethod
    def _check_keep_alive(cls, v: str | int | float) -> str | int | float:
        try:
            parse_setting_duration(v)
        except LlmuxError as exc:
            raise ValueError(exc.message) from None
        return v

    @field_validator("upstreams")
    @classmethod
    def _unique_upstreams(cls, v: list[UpstreamSettings]) -> list[UpstreamSettings]:
        names = [u.name for u in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"upstream names must be unique; repeated: {', '.join(dupes)}")
        return v

    @property
    def keep_alive_seconds(self) -> float:
        return parse_setting_duration(self.keep_alive)

    @field_validator("origins", mode="before")
    @classmethod
    def _split_origins(cls, v: Any) -> Any:
        if isinstance(v, str):
            text = v.strip()
            if text.startswith("["):
                return json.loads(text)
            return [o.strip() for o in text.split(",") if o.strip()]
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = settings_cls.model_config.get("toml_file")
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)

    @property
    def bind(self) -> tuple[str, int]:
        return parse_host(self.host)

    @property
    def base_url(self) -> str:
        host, port = self.bind
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser()

    @property
    def models_dir(self) -> Path:
        return (self.models or self.home_dir / "models").expanduser()


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the Settings once: overrides > env > TOML file > defaults."""
    path = config_file or os.environ.get("LLMUX_CONFIG")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if not path:
        return Settings(**overrides)
    toml_path = Path(path).expanduser()
    if not toml_path.is_file():
        raise FileNotFoundError(f"config file {toml_path} does not exist")
    cls = type(
        "FileSettings",
        (Settings,),
        {"model_config": SettingsConfigDict(**{**Settings.model_config, "toml_file": toml_path})},
    )
    settings: Settings = cls(**overrides)
    settings.config = toml_path
    return settings
