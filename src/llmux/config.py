"""The one Settings object, in sections: one per component, each component takes only
its own.

Sources, highest priority first: explicit overrides (CLI flags), environment variables
``LLMUX_<SECTION>__<KEY>`` (``LLMUX_HOME``, ``LLMUX_HOST`` and ``LLMUX_CONFIG`` have no
section), a TOML file (``--config`` or ``LLMUX_CONFIG``) with one table per section,
defaults. It is built once by :func:`load_settings` and passed down; nothing else reads
``os.environ``.

The flat names of earlier releases (``num_ctx``, ``LLMUX_MAX_QUEUE``, ``database_url``...)
still work: :data:`FLAT_NAMES` moves each into its section with a deprecation warning.
"""

from __future__ import annotations

import json
import logging
import os
import tomllib
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from llmux.audit.settings import AuditSettings
from llmux.core.durations import parse_setting_duration
from llmux.errors import LlmuxError
from llmux.observability.settings import MetricsSettings, TracingSettings
from llmux.policies.settings import CacheSettings, ModerationSettings, RedactionSettings
from llmux.upstream.settings import GatewaySettings, UpstreamSettings

log = logging.getLogger(__name__)
DEFAULT_PORT = 11434
ENV_PREFIX = "LLMUX_"
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


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(Section):
    """The HTTP layer: who may call, how much they may send, how replies are spelled."""

    origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="extra allowed CORS origins (list, or comma-separated)"
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="extra host names accepted in the Host header (list, or comma-separated;"
        " *.example.com wildcards; * turns the check off); local names and addresses are"
        " always accepted",
    )
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="addresses or CIDR ranges of reverse proxies whose X-Forwarded-For is"
        " believed; empty: the peer address is the client",
    )
    log_level: str = "info"
    log_format: Literal["text", "json"] = Field(default="text", description="text or JSON lines")
    log_bodies: bool = Field(default=False, description="debug: log prompts, replies (redacted)")
    access_log: bool = Field(default=True, description="one log line per request (metadata)")
    reasoning_fields: list[ReasoningField] = Field(
        default_factory=lambda: list[ReasoningField](["reasoning_content"]),
        description="OpenAI-API field name(s) for the thinking trace: DeepSeek's and/or Ollama's",
    )
    api_docs: bool = Field(
        default=False,
        description="serve the interactive docs at /docs (Swagger UI, loaded from a CDN);"
        " /openapi.json is always there",
    )
    ollama_version: str = Field(
        default="0.12.6",
        description="the Ollama release whose API llmux implements, as /api/version reports it",
    )
    tls_cert: Path | None = Field(
        default=None,
        description="PEM certificate (chain) to serve HTTPS with, TLS 1.2 or newer (1.3"
        " preferred); unset: plain HTTP (terminate TLS in a proxy)",
    )
    tls_key: Path | None = Field(default=None, description="the certificate's PEM private key")
    balance_currency: str = Field(default="CNY", description="currency GET /user/balance reports")
    balance_total: str = Field(default="0.00", description="balance GET /user/balance reports, as a string")  # fmt: skip
    drain_s: float = Field(default=30.0, ge=0, le=3600, description="on SIGTERM: how long running requests and streams may take to finish; new ones get 503")  # fmt: skip

    @field_validator("origins", "allowed_hosts", mode="before")
    @classmethod
    def _split_origins(cls, v: Any) -> Any:
        if isinstance(v, str):
            text = v.strip()
            if text.startswith("["):
                return json.loads(text)
            return [o.strip() for o in text.split(",") if o.strip()]
        return v


class EngineSettings(Section):
    """The embedded llama.cpp engine."""

    keep_alive: str | int | float = Field(
        default="5m", description="how long an idle model stays loaded"
    )
    num_ctx: int = Field(default=4096, ge=64)
    num_thread: int | None = Field(default=None, ge=1)
    num_gpu: int = -1
    num_parallel: int | None = Field(
        default=None, ge=1, le=64, description="sequences one model decodes together; None = auto"
    )
    parallel: dict[str, int] = Field(
        default_factory=dict, description="per-model num_parallel: model name -> slots"
    )
    flash_attention: bool = Field(
        default=True,
        description="llama.cpp flash attention where the backend supports it; false: off",
    )
    kv_budget_mib: int = Field(
        default=2048, ge=16, description="KV cache memory auto num_parallel may use"
    )
    request_timeout: float | None = Field(
        default=None,
        gt=0,
        description="seconds a generation may take, queue included; None = no limit",
    )
    max_loaded_models: int = Field(default=3, ge=1)
    max_queue: int = Field(default=512, ge=1)

    @field_validator("keep_alive")
    @classmethod
    def _check_keep_alive(cls, v: str | int | float) -> str | int | float:
        try:
            parse_setting_duration(v)
        except LlmuxError as exc:
            raise ValueError(exc.message) from None
        return v

    @property
    def keep_alive_seconds(self) -> float:
        return parse_setting_duration(self.keep_alive)


class StoreSettings(Section):
    """The model store and registry transfers."""

    path: Path | None = Field(default=None, description="model store; default $LLMUX_HOME/models")
    bundled_model: str = Field(
        default="smollm2:135m", description="name for the bundled GGUF; '' skips"
    )
    pull_max_parts: int = Field(
        default=16, ge=1, le=64, description="ranged parts one blob download is split into, at most"
    )
    pull_part_min_mib: int = Field(
        default=100, ge=1, description="smallest ranged part of a blob download, in MiB"
    )
    registry_timeout: float = Field(
        default=30.0,
        gt=0,
        description="seconds to wait for a registry to connect or send more bytes",
    )
    hf_endpoint: str = Field(
        default="https://huggingface.co",
        description="Hugging Face Hub URL that hf.co/ names pull from",
    )


class StorageSettings(Section):
    """The SQL database (conversation history; principals, usage and audit later)."""

    database_url: str | None = Field(
        default=None,
        description="sqlite:///PATH or postgresql://USER@HOST/DB; default $LLMUX_HOME/llmux.db",
    )


class IssuerSettings(Section):
    """An external identity provider whose JWTs are accepted (RS256 or ES256)."""

    issuer: str = Field(description="the tokens' 'iss' claim, exactly")
    audience: str | None = Field(default=None, description="required 'aud', if any")
    jwks_url: str | None = Field(default=None, description="where its JWKS is fetched from")
    jwks_file: Path | None = Field(default=None, description="its JWKS, as a local file")
    public_key_file: Path | None = Field(default=None, description="one PEM public key")
    algorithm: Literal["RS256", "ES256"] = Field(
        default="RS256", description="the algorithm of public_key_file"
    )


class AuthSettings(Section):
    """Access control: who may call, with what credential (docs/security.md)."""

    mode: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="auto: off while bound to loopback, and refusing to start bound to any"
        " other address; on: credentials required on every route but a few public ones;"
        " off: no credentials, anywhere (a warning at every start)",
    )
    secret: str | None = Field(
        default=None,
        description="server secret (>= 32 bytes) for key hashes, token signing and sealed"
        " client secrets; replicas must share it; default: $LLMUX_HOME/auth-secret, made once",
    )
    admin_name: str = Field(default="admin", description="name of the bootstrap admin")
    admin_password: str | None = Field(
        default=None,
        description="creates the bootstrap admin when there is no admin yet (use the"
        " environment: LLMUX_AUTH__ADMIN_PASSWORD); without it a one-time setup token is"
        " printed at start",
    )
    admins_see_all: bool = Field(
        default=False,
        description="admins see, search and export every user's conversations (else only"
        " their own, like everyone)",
    )
    issuer: str = Field(default="llmux", description="'iss' and 'aud' of llmux's own tokens")
    token_ttl_s: int = Field(default=7200, ge=60, le=86400, description="life of issued tokens")
    leeway_s: float = Field(
        default=30.0, ge=0, le=300, description="clock skew allowed on exp, nbf and iat"
    )
    cache_s: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="how long a verified credential is trusted without a database check;"
        " a revoked one is refused by every replica within this time",
    )
    max_failures: int = Field(
        default=10, ge=1, description="failed attempts per client address before 429"
    )
    failure_window_s: float = Field(default=60.0, gt=0, description="... within this window")
    session_idle_s: float = Field(
        default=8 * 3600, gt=0, description="a web UI session ends after this long unused"
    )
    session_max_s: float = Field(
        default=7 * 86400, gt=0, description="... and this long after logging in, at most"
    )
    issuers: list[IssuerSettings] = Field(
        default_factory=list, description="external identity providers ([[auth.issuers]])"
    )
    external_scopes: list[str] = Field(
        default_factory=lambda: ["inference", "models:read"],
        description="the most an external provider's token may have (narrowed by its"
        " 'scope' claim)",
    )


class QuotaSettings(Section):
    """One scope's limits: requests and tokens per minute, requests at once."""

    requests_per_minute: int | None = Field(default=None, ge=1, description="requests per minute")
    tokens_per_minute: int | None = Field(
        default=None, ge=1, description="prompt + completion tokens per minute"
    )
    concurrent_requests: int | None = Field(
        default=None, ge=1, description="requests running at once"
    )


class LimitsSettings(Section):
    """Rate, token and concurrency limits (docs/quotas.md). The unprefixed limits hold
    for each caller (its API key, OAuth2 client or user; the client address while access
    control is off), ``global_*`` for the whole server, ``models`` for each model (all
    callers together); per-key, per-user and per-client limits are set through the admin
    API or ``llmux limits``."""

    requests_per_minute: int | None = Field(
        default=None,
        ge=1,
        description="model requests per minute for each caller (key,"
        " client or user; the client address while access control is off)",
    )
    tokens_per_minute: int | None = Field(
        default=None, ge=1, description="prompt + completion tokens per minute for each caller"
    )
    concurrent_requests: int | None = Field(
        default=None, ge=1, description="model requests running at once for each caller"
    )
    global_requests_per_minute: int | None = Field(
        default=None, ge=1, description="model requests per minute for the whole server"
    )
    global_tokens_per_minute: int | None = Field(
        default=None, ge=1, description="tokens per minute for the whole server"
    )
    global_concurrent_requests: int | None = Field(
        default=None, ge=1, description="model requests running at once on the whole server"
    )
    models: dict[str, QuotaSettings] = Field(
        default_factory=dict, description="limits per model name ([limits.models.NAME])"
    )
    default_output_tokens: int = Field(
        default=4096,
        ge=1,
        description="output tokens reserved for a request that sets no max_tokens/num_predict",
    )
    lease_s: float = Field(
        default=60.0,
        gt=0,
        description="a concurrency slot or budget hold is freed this long after its process"
        " stops renewing it (dies)",
    )
    refresh_s: float = Field(
        default=5.0,
        gt=0,
        description="how often each replica rereads the per-key limits and the budgets",
    )
    redis_down: Literal["refuse", "share"] = Field(
        default="refuse",
        description="Redis unreachable: refuse (503), or share: each replica counts"
        " limit/replicas by itself until Redis is back",
    )
    replicas: int = Field(
        default=1, ge=1, description="the number of replicas, for redis_down = share"
    )
    local_share: float = Field(
        default=0.02,
        ge=0,
        le=0.25,
        description="with Redis: the part of a large limit a replica takes at a time and"
        " spends by itself, while the limit is under half used (0: every request asks Redis)",
    )
    local_share_s: float = Field(
        default=1.0,
        gt=0,
        le=10,
        description="a replica gives back what it has not spent of its share after this long",
    )


class PriceSettings(Section):
    """A model's price per million tokens, in the currency of ``[prices] currency``."""

    input: float = Field(default=0.0, ge=0, description="per million prompt tokens")
    cached_input: float | None = Field(
        default=None, ge=0, description="per million cached prompt tokens (default: input)"
    )
    output: float = Field(default=0.0, ge=0, description="per million completion tokens")


class PricesSettings(Section):
    """What requests cost, for budgets and usage (docs/quotas.md). Models without a
    price cost nothing (local models, by default)."""

    currency: str = Field(default="USD", min_length=1, description="the budgets' currency")
    models: dict[str, PriceSettings] = Field(
        default_factory=dict, description="price per model name ([prices.models.NAME])"
    )


class UsageSettings(Section):
    """Usage accounting: one record per model request, written in batches."""

    enabled: bool = Field(default=True, description="record usage (needs the database)")
    queue_size: int = Field(
        default=10_000,
        ge=1,
        description="records waiting to be written; when full, new requests wait (backpressure)",
    )
    batch_size: int = Field(default=500, ge=1, description="records per database write")
    flush_s: float = Field(default=1.0, gt=0, description="the longest a record waits")
    reconcile_s: float = Field(
        default=300.0,
        ge=0,
        description="how often the budget counters are compared with the ledger and set"
        " right (0: never; `llmux budgets reconcile` does it by hand)",
    )


class RedisSettings(Section):
    """Shared state across replicas: limit and budget counters (docs/quotas.md)."""

    url: str | None = Field(
        default=None,
        description="redis://HOST:PORT/DB; unset: limits are counted in this process",
    )
    prefix: str = Field(
        default="llmux:", description="prefix of llmux's keys, to share a Redis with others"
    )


class BatchSettings(Section):
    """The Batch API: its files and the worker that runs batches (docs/batch.md)."""

    max_file_bytes: int = Field(default=200 * 1024 * 1024, ge=1024, description="the largest file POST /v1/files takes")  # fmt: skip
    max_lines: int = Field(default=50_000, ge=1, description="the most lines a batch file may have")
    file_store: Literal["auto", "disk", "database"] = Field(default="auto", description="where the files' bytes live; auto: the database on PostgreSQL, else the disk")  # fmt: skip
    worker: bool = Field(default=True, description="this replica runs batches (false: it only takes them)")  # fmt: skip
    parallel: int = Field(default=2, ge=1, le=64, description="batches one replica works at once")  # fmt: skip
    concurrency: int = Field(default=8, ge=1, le=256, description="lines of a batch running at once")  # fmt: skip
    lease_s: float = Field(default=30.0, gt=0, description="a batch's lease: another replica takes it over this long after its holder died")  # fmt: skip
    check_s: float = Field(default=2.0, gt=0, description="how often a running batch renews its lease and looks for a cancel")  # fmt: skip
    poll_s: float = Field(default=5.0, gt=0, description="how often an idle worker looks for batches made on other replicas")  # fmt: skip

    @model_validator(mode="after")
    def _lease_outlives_checks(self) -> BatchSettings:
        if self.lease_s < 3 * self.check_s:
            raise ValueError("batch.lease_s must be at least 3 x batch.check_s, or leases run out between renewals")  # fmt: skip
        return self


# flat name of earlier releases -> (section, key)
FLAT_NAMES: dict[str, tuple[str, str]] = {
    **{k: ("server", k) for k in ServerSettings.model_fields},
    **{k: ("engine", k) for k in EngineSettings.model_fields},
    **{k: ("store", k) for k in StoreSettings.model_fields if k != "path"},
    "models": ("store", "path"),
    "database_url": ("storage", "database_url"),
    "aliases": ("gateway", "aliases"),
}


def nest_flat(data: dict[str, Any], where: str) -> dict[str, Any]:
    """``data`` with every flat name of earlier releases moved into its section (the
    flat value wins over one already there) and a deprecation warning naming them."""
    flat = [k for k in data if k in FLAT_NAMES]
    if not flat:
        return data
    data = dict(data)
    for name in flat:
        section, key = FLAT_NAMES[name]
        target = data.get(section)
        target = dict(target) if isinstance(target, dict) else {}
        target[key] = data.pop(name)
        data[section] = target
    moved = ", ".join(f"{n} -> {FLAT_NAMES[n][0]}.{FLAT_NAMES[n][1]}" for n in flat)
    message = (
        f"flat setting names in {where} are deprecated; use the sectioned form "
        f"(TOML [section] tables, LLMUX_<SECTION>__<KEY>): {moved}"
    )
    warnings.warn(message, DeprecationWarning, stacklevel=3)
    log.warning(message)
    return data


class LegacyEnv(PydanticBaseSettingsSource):
    """``LLMUX_<FLAT_NAME>`` variables of earlier releases, moved into their sections."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        env = {k.upper(): v for k, v in os.environ.items()}
        for flat, (section, key) in FLAT_NAMES.items():
            value = env.get(ENV_PREFIX + flat.upper())
            if value is not None:
                found[flat] = _decode_env(value, section, key)
        return nest_flat(found, "the environment")


class SectionedToml(TomlConfigSettingsSource):
    """The TOML file, with top-level flat names of earlier releases moved into sections."""

    def __call__(self) -> dict[str, Any]:
        return nest_flat(super().__call__(), str(self.toml_file_path))


def _decode_env(value: str, section: str, key: str) -> Any:
    """JSON for list and table values (as pydantic-settings decodes them), else the text."""
    annotation = Settings.model_fields[section].annotation
    field = annotation.model_fields[key]  # type: ignore[union-attr]
    origin = getattr(field.annotation, "__origin__", None)
    text = value.strip()
    if origin in (list, dict) and text[:1] in ("[", "{"):
        return json.loads(text)
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", env_nested_delimiter="__"
    )

    host: str = Field("127.0.0.1:11434", description="host:port to bind and to reach the server")
    home: Path = Field(Path("~/.llmux"), description="where all state lives")
    config: Path | None = Field(None, description="TOML configuration file")

    server: ServerSettings = Field(default_factory=ServerSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    gateway: GatewaySettings = Field(
        default_factory=GatewaySettings, description="upstream keep-alive, aliases"
    )
    upstreams: list[UpstreamSettings] = Field(
        default_factory=list, description="upstream servers ([[upstreams]] tables)"
    )
    auth: AuthSettings = Field(default_factory=AuthSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    prices: PricesSettings = Field(default_factory=PricesSettings)
    usage: UsageSettings = Field(default_factory=UsageSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    redaction: RedactionSettings = Field(default_factory=RedactionSettings)
    moderation: ModerationSettings = Field(default_factory=ModerationSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)

    @model_validator(mode="before")
    @classmethod
    def _move_flat_names(cls, data: Any) -> Any:
        """Flat names passed in code (overrides) go into their sections too."""
        return nest_flat(data, "overrides") if isinstance(data, dict) else data

    @field_validator("upstreams")
    @classmethod
    def _unique_upstreams(cls, v: list[UpstreamSettings]) -> list[UpstreamSettings]:
        names = [u.name for u in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"upstream names must be unique; repeated: {', '.join(dupes)}")
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
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            env_settings,
            LegacyEnv(settings_cls),
        ]
        toml_file = settings_cls.model_config.get("toml_file")
        if toml_file:
            sources.append(SectionedToml(settings_cls))
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
        scheme = "https" if self.server.tls_cert else "http"
        return f"{scheme}://{host}:{port}"

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser()

    @property
    def models_dir(self) -> Path:
        return (self.store.path or self.home_dir / "models").expanduser()


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the Settings once: overrides > env > TOML file > defaults."""
    path = config_file or os.environ.get("LLMUX_CONFIG")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if not path:
        return Settings(**overrides)
    toml_path = Path(path).expanduser()
    if not toml_path.is_file():
        raise FileNotFoundError(f"config file {toml_path} does not exist")
    unknown = sorted(set(tomllib.loads(toml_path.read_text())) - set(Settings.model_fields) - set(FLAT_NAMES))  # fmt: skip
    if unknown:  # a misspelt section would otherwise be ignored: say so
        raise ValueError(f"config file {toml_path}: unknown section or key {', '.join(map(repr, unknown))}; see docs/configuration.md")  # fmt: skip
    cls = type(
        "FileSettings",
        (Settings,),
        {"model_config": SettingsConfigDict(**{**Settings.model_config, "toml_file": toml_path})},
    )
    settings: Settings = cls(**overrides)
    settings.config = toml_path
    return settings
