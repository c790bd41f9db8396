"""The settings of every process (workers, the CLI, the live and codec servers, `make up`): one
frozen object read from the environment once, in one place.

    from durable_agents.settings import Settings, settings

    settings().temporal_address       # this process's settings, read on first use and kept
    Settings(data_dir=tmp_path)       # a test's own, passed to what it builds

Each field names its environment variable (the README's Configuration table lists them all).
An empty variable counts as unset. All runtime data lives under one data directory, `DA_DATA_DIR`
(default `.data` in the current directory): the payload store, the blob store (workspace
snapshots), the vault file and its key, the codec keys, and the local stack's database, logs and
pids. The older variables for each of those (`DA_PAYLOAD_DIR`, `DA_BLOB_DIR`, `DA_VAULT_FILE`,
...) still override their one path. Nothing is ever written inside the installed package.

Code takes a `Settings` where it is handed one and asks `settings()` otherwise, at the moment it
needs a value (not at import), so a test that changes the environment calls
`settings.cache_clear()` and the next reader sees the change.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from durable_agents.errors import UserError

__all__ = ["SECRET_PREFIX", "Settings", "SettingsError", "settings"]

SECRET_PREFIX = "DA_SECRET_"  # the vault's env backend: DA_SECRET_<NAME>
_FLAG_ON = ("1", "true", "on", "yes")  # what turns a DA_* switch on; anything else leaves it off


class SettingsError(UserError, ValueError):
    """The environment holds a value a setting cannot take; the message names the variable."""


class _EnvSecrets(PydanticBaseSettingsSource):
    """The DA_SECRET_* variables, by variable name (the vault's env backend), as one field."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything is given at once by __call__

    def __call__(self) -> dict[str, Any]:
        found = {k: v for k, v in os.environ.items() if k.startswith(SECRET_PREFIX) and v}
        return {"env_secrets": found} if found else {}


def _in_data_dir(name: str) -> Callable[[dict[str, Any]], Path]:
    """The default of a path: `name` inside the data directory (validated before it)."""
    return lambda data: data["data_dir"] / name


class Settings(BaseSettings):
    """Every setting, with its environment variable and default. Frozen: read once, passed on."""

    model_config = SettingsConfigDict(frozen=True, populate_by_name=True, env_ignore_empty=True, extra="ignore")

    # Temporal
    temporal_address: str = Field("localhost:7233", validation_alias="TEMPORAL_ADDRESS")
    temporal_namespace: str = Field("default", validation_alias="TEMPORAL_NAMESPACE")
    temporal_ui_url: str = Field("http://localhost:8233", validation_alias="TEMPORAL_UI_URL")

    # The model (harness worker only)
    anthropic_api_key: SecretStr | None = Field(None, validation_alias="ANTHROPIC_API_KEY")
    anthropic_base_url: str | None = Field(None, validation_alias="ANTHROPIC_BASE_URL")
    anthropic_timeout_s: float = Field(600.0, gt=0, validation_alias="ANTHROPIC_TIMEOUT_S")
    # The SDK's HTTP transport: aiohttp (its `aiohttp` extra) costs about half the CPU of httpx a
    # call (bench/model_client.py); httpx is the SDK's default, and the one that speaks HTTP/2.
    anthropic_http_client: Literal["aiohttp", "httpx"] = Field("aiohttp", validation_alias="ANTHROPIC_HTTP_CLIENT")

    # Workers
    harness_max_activities: int = Field(1000, ge=1, validation_alias="HARNESS_MAX_ACTIVITIES")
    harness_max_cached_workflows: int = Field(2000, ge=0, validation_alias="HARNESS_MAX_CACHED_WORKFLOWS")
    # Off: workflow code runs without the SDK's sandbox (worker.harness_runner), which saves its
    # per-activation cost; determinism then rests on the replay tests alone.
    harness_workflow_sandbox: bool = Field(True, validation_alias="HARNESS_WORKFLOW_SANDBOX")
    # The same cache in bytes (the cached sessions' history sizes); above it, waiting sessions are
    # evicted, least recently active first (`durable_agents.workflow_cache`). 0: count bound only.
    harness_cache_mb: int = Field(512, ge=0, validation_alias="DA_HARNESS_CACHE_MB")
    # call_model's worker-local context prefixes, in bytes of JSON (least recently used out first).
    model_context_cache_mb: int = Field(256, ge=1, validation_alias="DA_MODEL_CONTEXT_CACHE_MB")
    # Tests only: provision_sandbox waits this long first (so a test can kill the worker meanwhile).
    test_provision_delay_s: float = Field(0.0, ge=0, validation_alias="DA_TEST_PROVISION_DELAY_S")
    agents_dir: Path = Field(Path("agents"), validation_alias="DA_AGENTS_DIR")
    sandbox_host_id: str | None = Field(None, validation_alias="SANDBOX_HOST_ID")  # None: the hostname
    # The warm pool: at least SANDBOX_WARM_POOL containers (0: no pool), growing to the recent peak
    # of demand up to SANDBOX_WARM_POOL_MAX.
    sandbox_warm_pool: int = Field(2, ge=0, validation_alias="SANDBOX_WARM_POOL")
    sandbox_warm_pool_max: int = Field(64, ge=0, validation_alias="SANDBOX_WARM_POOL_MAX")
    # Session containers a sandbox host holds at most (0: no limit); at the limit it leaves new
    # sandboxes to other hosts (it stops asking for provisioning work until one is removed).
    sandbox_max_containers: int = Field(0, ge=0, validation_alias="SANDBOX_MAX_CONTAINERS")
    # Tool calls, snapshots and removals one sandbox worker runs at once; provisions at once.
    sandbox_max_activities: int = Field(500, ge=1, validation_alias="SANDBOX_MAX_ACTIVITIES")
    sandbox_max_provisions: int = Field(64, ge=1, validation_alias="SANDBOX_MAX_PROVISIONS")
    # Concurrent Docker API calls of one sandbox worker, by kind: container creations, removals,
    # execs (a shell's start, a snapshot's, a one-off command's); the persistent shells' own I/O is not one.
    sandbox_docker_creates: int = Field(4, ge=1, validation_alias="SANDBOX_DOCKER_CREATES")
    sandbox_docker_removals: int = Field(2, ge=1, validation_alias="SANDBOX_DOCKER_REMOVALS")
    sandbox_docker_execs: int = Field(16, ge=1, validation_alias="SANDBOX_DOCKER_EXECS")
    # While a sandbox host is busy, releasing closed sessions' containers waits at most this long
    # after the last release pass (0: never waits).
    sandbox_release_defer_s: float = Field(15.0, ge=0, validation_alias="SANDBOX_RELEASE_DEFER_S")
    # Learned skills below this confidence ((successes + 1) / (outcomes + 2)) are no longer suggested.
    skill_min_confidence: float = Field(0.34, ge=0, le=1, validation_alias="DA_SKILL_MIN_CONFIDENCE")
    # How long installing an environment's packages into a derived image may take.
    packages_timeout_s: float = Field(1200.0, gt=0, validation_alias="DA_PACKAGES_TIMEOUT_S")
    metrics_port: int | None = Field(None, ge=0, le=65535, validation_alias="DA_METRICS_PORT")  # 0 or unset: off

    # Runtime data: everything under data_dir unless a path of its own is given. data_dir comes
    # first: the paths after it default to places inside it.
    data_dir: Path = Field(Path(".data"), validation_alias="DA_DATA_DIR")
    payload_store: str = Field(
        "", validation_alias="DA_PAYLOAD_STORE"
    )  # a directory, s3://BUCKET, off; "": payload_dir
    payload_dir: Path = Field(default_factory=_in_data_dir("payloads"), validation_alias="DA_PAYLOAD_DIR")
    payload_threshold: int = Field(256 * 1024, ge=0, validation_alias="DA_PAYLOAD_THRESHOLD")
    blob_dir: Path = Field(default_factory=_in_data_dir("blobs"), validation_alias="DA_BLOB_DIR")

    # The vault
    vault: str = Field("file,env", validation_alias="DA_VAULT")
    vault_file: Path = Field(default_factory=_in_data_dir("vault.json"), validation_alias="DA_VAULT_FILE")
    vault_key_file: Path = Field(
        default_factory=lambda data: data["vault_file"].with_suffix(".key"), validation_alias="DA_VAULT_KEY_FILE"
    )
    vault_key: SecretStr | None = Field(None, validation_alias="DA_VAULT_KEY")
    env_secrets: dict[str, SecretStr] = Field(default_factory=dict, validation_alias="DA_SECRET_")  # DA_SECRET_*

    # Encrypted history
    encrypt_history: bool = Field(False, validation_alias="DA_ENCRYPT_HISTORY")
    codec_key_file: Path = Field(default_factory=_in_data_dir("codec-keys.json"), validation_alias="DA_CODEC_KEY_FILE")
    codec_keys: SecretStr | None = Field(None, validation_alias="DA_CODEC_KEYS")

    # web_search's backend (module:factory or a search service's URL); unset: the tool is not offered
    web_search: str | None = Field(None, validation_alias="DA_WEB_SEARCH")

    # Live streaming
    live_url: str | None = Field(None, validation_alias="DA_LIVE_URL")

    # The Managed Agents API (`da serve`)
    api_key: SecretStr | None = Field(None, validation_alias="DA_API_KEY")
    database_url: str = Field(
        default_factory=lambda data: f"sqlite+aiosqlite:///{data['data_dir'] / 'api.db'}",
        validation_alias="DA_DATABASE_URL",
    )
    api_rate_limit: int = Field(0, ge=0, validation_alias="DA_API_RATE_LIMIT")  # requests a minute per key; 0: none

    # The local stack (`make up`)
    live_port: int = Field(8780, ge=1, le=65535, validation_alias="DA_LIVE_PORT")
    codec_port: int = Field(8081, ge=1, le=65535, validation_alias="DA_CODEC_PORT")
    scripted_model_port: int = Field(8765, ge=1, le=65535, validation_alias="SCRIPTED_MODEL_PORT")

    # Logs and traces. The OTLP exporter reads the other OTEL_* variables (headers, timeout,
    # service name) itself; these decide whether and how this process exports at all.
    log_format: str = Field("json", validation_alias="LOG_FORMAT")  # json, or console for humans
    log_level: str = Field("INFO", validation_alias="LOG_LEVEL")
    otel_console: bool = Field(False, validation_alias="DA_OTEL_CONSOLE")
    otel_sdk_disabled: str | None = Field(None, validation_alias="OTEL_SDK_DISABLED")
    otel_endpoint: str | None = Field(None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    otel_traces_endpoint: str | None = Field(None, validation_alias="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    otel_protocol: str | None = Field(None, validation_alias="OTEL_EXPORTER_OTLP_PROTOCOL")
    otel_traces_protocol: str | None = Field(None, validation_alias="OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")

    @field_validator("data_dir", "payload_dir", "blob_dir", "vault_file", "vault_key_file", "codec_key_file")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        # Where the process started: a worker and the CLI in one directory share one data directory.
        return path.absolute()

    @field_validator("metrics_port")
    @classmethod
    def _zero_is_off(cls, port: int | None) -> int | None:
        return port or None

    @field_validator("encrypt_history", "otel_console", mode="before")
    @classmethod
    def _switch(cls, value: Any) -> Any:
        # As before the settings object: 1/true/on/yes turn it on, any other text leaves it off.
        return value.strip().lower() in _FLAG_ON if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Arguments first, then the environment, then the DA_SECRET_* variables; no .env file.
        return init_settings, env_settings, _EnvSecrets(settings_cls)

    def secret(self, variable: str) -> str | None:
        """The value of one DA_SECRET_* variable (the vault's env backend), or None."""
        value = self.env_secrets.get(variable)
        return value.get_secret_value() if value is not None else None


@functools.cache
def settings() -> Settings:
    """This process's settings, read from the environment on first use."""
    try:
        return Settings()
    except ValidationError as e:
        # Never the input: it may be a secret. Paths that default into a bad value are not news.
        errors = [err for err in e.errors() if err["type"] != "default_factory_not_called"]
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in errors)
        raise SettingsError(f"bad setting in the environment: {problems}") from None
