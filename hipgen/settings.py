"""Runtime settings of every hipgen service and command: one :class:`Settings` class.

Sources, highest priority first:

1. keyword arguments (``Settings(port=0)``, used by tests);
2. environment variables ``HIPGEN_<NAME>`` (case-insensitive), e.g. ``HIPGEN_PORT=50052``;
3. a TOML file named by ``HIPGEN_CONFIG`` (or passed to :func:`get_settings`), with the field names
   as top-level keys, e.g. ``port = 50052``;
4. the defaults below.

Unknown keys in the TOML file and invalid values raise at start-up, naming the key and the allowed
values. ``python -m hipgen.settings`` prints the markdown table of every setting that the README
embeds (:func:`settings_table_markdown`); ``--effective`` prints the values in force instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import typing
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from hipgen.errors import InputError

ENV_PREFIX = "HIPGEN_"
#: Environment variable naming the optional TOML config file.
CONFIG_ENV = "HIPGEN_CONFIG"

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

# The config file for the Settings() call in progress; set by get_settings(config_file=...).
_config_file: ContextVar[Path | None] = ContextVar("hipgen_config_file", default=None)


class Settings(BaseSettings):
    """Settings of hipgen services and commands (env prefix ``HIPGEN_``, optional TOML file)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="Address the gRPC server (and /metrics) binds to.")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free port.")
    metrics_port: int = Field(
        9464, ge=0, le=65535, description="Port of the Prometheus `/metrics` endpoint; 0 disables it."
    )
    model_repository: Path = Field(
        Path("model_repository"), description="Triton-layout model repository the ORT backend loads."
    )
    backend: Literal["ort", "triton"] = Field(
        "ort", description="Inference backend: `ort` (embedded ONNX Runtime) or `triton` (remote Triton)."
    )
    ort_max_concurrent_runs: int = Field(
        2,
        ge=0,
        description="Runs of one model the `ort` backend computes at once; more wait their turn. Each run "
        "in flight grows ONNX Runtime's memory arena for good while adding no speed once the cores are "
        "busy (8 concurrent Generate calls: 3.0 GB vs 1.8 GB at 2, same images/s on 2 cores). 0: no "
        "limit.",
    )
    triton_url: str = Field(
        "127.0.0.1:8001", description="Triton gRPC address (`host:port`), for backend `triton`."
    )
    log_level: LogLevel = Field("INFO", description="Root log level (case-insensitive).")
    log_format: Literal["json", "text"] = Field(
        "json", description="Log format: `json` (one JSON object per line) or `text` (for a terminal)."
    )
    max_image_pixels: int = Field(
        64_000_000, gt=0, description="Largest image accepted, in pixels (decompression-bomb guard)."
    )
    max_message_bytes: int = Field(
        64 * 1024 * 1024, gt=0, description="Largest gRPC message received or sent, in bytes."
    )
    out_dir: Path = Field(
        Path("out"), description="Directory for outputs of commands and local dataset jobs."
    )
    grace_period_s: float = Field(
        30.0,
        ge=0,
        description="Seconds in-flight RPCs get to finish on SIGTERM/SIGINT; keep it above the slowest "
        "generation and below the pod's terminationGracePeriodSeconds.",
    )
    max_workers: int = Field(8, ge=1, description="Threads serving RPCs concurrently.")
    max_concurrent_rpcs: int = Field(
        32,
        ge=0,
        description="RPCs a server holds at once, running (`max_workers`) plus queued for a thread, a "
        "streaming RPC until its stream ends; over it, RESOURCE_EXHAUSTED with RetryInfo at once instead "
        "of an unbounded queue (health and reflection exempt). Keep it at or above `max_workers`; 0: off.",
    )
    max_connection_age_s: float = Field(
        0.0,
        ge=0,
        description="Close each client connection after this many seconds (its calls get `grace_period_s` "
        "to finish) so that clients re-resolve DNS and reach pods added behind a headless Kubernetes "
        "Service; 0: connections live on.",
    )
    max_connection_age_grace_s: float = Field(
        3600.0,
        ge=0,
        description="Seconds the calls on an aged-out connection (`max_connection_age_s`) may still run "
        "before it is closed under them: above the longest call (a scoring run, a Generate shard).",
    )
    generate_max_images: int = Field(
        64, ge=1, description="Most images one GenerateService call may ask for (conditions × images each)."
    )
    generate_batch_size: int = Field(
        8, ge=1, description="Images GenerateService denoises together (one UNet call per step)."
    )
    score_max_images: int = Field(
        10_000, ge=4, description="Most images ScoreService reads from one set (reference or candidate)."
    )
    score_data_root: Path = Field(
        Path("."),
        description="Folder that ScoreService's `file://` set URIs must lie inside (resolved, symlinks "
        "followed); anything outside is refused.",
    )
    score_max_concurrent: int = Field(
        2, ge=1, description="Scoring runs ScoreService computes at once; more answer RESOURCE_EXHAUSTED."
    )
    auth_secret_file: Path | None = Field(
        None,
        description="File with the HS256 secret (at least 32 bytes, `hipgen token secret`) that signs bearer "
        "tokens (`hipgen token create`); set, every RPC but health and reflection needs a token with the "
        "service's scope. Unset: no authentication, for 127.0.0.1 only (a warning otherwise).",
    )
    rate_limit_rps: float = Field(
        0.0,
        ge=0,
        description="RPCs per second each client (token subject, else peer address) may start, health and "
        "reflection exempt; over it, RESOURCE_EXHAUSTED with RetryInfo. 0 turns rate limits off.",
    )
    rate_limit_burst: int = Field(
        20, ge=1, description="RPCs a client may start at once before `rate_limit_rps` applies (bucket size)."
    )
    tls_cert_file: Path | None = Field(
        None, description="PEM server certificate (chain); with `tls_key_file`, serve TLS. Unset: plaintext."
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of `tls_cert_file`.")
    tls_client_ca_file: Path | None = Field(
        None,
        description="PEM CA that client certificates must chain to; set, mutual TLS: clients without such a "
        "certificate are refused.",
    )
    # --- the gateway: downstream services and dataset jobs -------------------------------------------
    angle_address: str = Field(
        "127.0.0.1:50052", description="Gateway: address (`host:port`) of AngleService it proxies to."
    )
    generate_address: str = Field(
        "127.0.0.1:50053",
        description="Gateway and shard workers: address of GenerateService (proxied; dataset jobs call it).",
    )
    score_address: str = Field(
        "127.0.0.1:50054", description="Gateway: address of ScoreService (proxied; dataset jobs score on it)."
    )
    downstream_token_file: Path | None = Field(
        None,
        description="File with the bearer token the gateway and shard workers send to the services. Set: "
        "every call upstream, proxied ones too, carries it (the gateway has checked the caller's). Unset: "
        "proxied calls forward the caller's token, the gateway's own calls send none.",
    )
    downstream_ca_file: Path | None = Field(
        None, description="CA bundle to verify the services' TLS certificates; unset: plaintext channels."
    )
    downstream_lb_policy: Literal["round_robin", "pick_first"] = Field(
        "round_robin",
        description="gRPC load balancing of the gateway's and shard workers' channels: `round_robin` spreads "
        "calls over every address the name resolves to (a headless Service: one per pod, with a "
        "`dns:///name:port` address); `pick_first` sends them all to one.",
    )
    dataset_db_url: str = Field(
        "sqlite:///out/datasets.db",
        description="SQLAlchemy URL of the dataset-job database: SQLite by default, or e.g. "
        "`postgresql+psycopg://user@host/db`.",
    )
    dataset_output_root: Path = Field(
        Path("out"),
        description="Folder that `file://` dataset outputs must lie inside (resolved, symlinks followed).",
    )
    dataset_max_images: int = Field(100_000, ge=1, description="Most images one dataset job may ask for.")
    dataset_max_running: int = Field(2, ge=1, description="Dataset jobs running at once on the gateway.")
    dataset_max_queued: int = Field(
        16, ge=0, description="Dataset jobs waiting beyond the running ones; more answer RESOURCE_EXHAUSTED."
    )
    dataset_shard_workers: int = Field(
        2, ge=1, description="Shards of one job the local executor runs at once (each calls GenerateService)."
    )
    dataset_images_per_shard: int = Field(32, ge=1, le=1024, description="Default images per shard.")
    dataset_max_regenerations: int = Field(
        8, ge=0, description="Most regenerations per image a tolerance filter may ask for."
    )
    dataset_shard_retries: int = Field(
        8,
        ge=0,
        description="Retries of a shard whose Generate call failed with UNAVAILABLE, RESOURCE_EXHAUSTED or a "
        "deadline, or whose writes failed (a full disk, S3 5xx): backoff doubles from 1 s up to 30 s (at "
        "least a server's RetryInfo), so the default 8 ride out about 2 minutes of outage.",
    )
    dataset_executor: Literal["local", "kubernetes"] = Field(
        "local", description="Where shards run unless a job says: `local` (worker pool) or `kubernetes`."
    )
    kubernetes_namespace: str = Field("hipgen", description="Namespace of the dataset Indexed Jobs.")
    kubernetes_worker_image: str = Field(
        "hipgen/gateway:0.1.0",
        description="Image of the shard-worker pods: the gateway's (they run services.gateway.worker).",
    )
    kubernetes_parallelism: int = Field(8, ge=1, description="Shard-worker pods of one Indexed Job at once.")
    kubernetes_shards_per_pod: int = Field(4, ge=1, description="Shards one worker pod (one index) runs.")
    # --- the review / reader-study web app (services/review) --------------------------------------------
    review_port: int = Field(8090, ge=0, le=65535, description="HTTP port of the review app; 0: a free one.")
    review_gateway_address: str = Field(
        "127.0.0.1:50051", description="Review app: address (`host:port`) of the gateway it calls over gRPC."
    )
    review_gateway_token_file: Path | None = Field(
        None,
        description="Review app: file with its bearer token for the gateway (scopes `datasets measure`, "
        "`hipgen token create --scope datasets --scope measure`); unset: no token (auth off).",
    )
    review_gateway_ca_file: Path | None = Field(
        None, description="Review app: CA bundle to verify the gateway's TLS certificate; unset: plaintext."
    )
    review_db_url: str = Field(
        "sqlite:///out/review.db",
        description="SQLAlchemy URL of the review app's database (invites, audit trail, studies, answers).",
    )
    review_data_root: Path = Field(
        Path("out"), description="Folder that reader-study image sets must lie inside (resolved)."
    )
    review_session_secret_file: Path | None = Field(
        None,
        description="File with the key that signs review-app session cookies (32+ bytes, `hipgen token "
        "secret`); unset: a random key per process (sessions end when the app restarts).",
    )
    review_secure_cookies: bool = Field(
        False, description="Mark session cookies `Secure` (set when the app is served over HTTPS)."
    )
    review_rate_limit_rps: float = Field(
        20.0, gt=0, description="Review app: requests per second per client address (token bucket)."
    )
    review_rate_limit_burst: int = Field(60, ge=1, description="Review app: burst of that bucket.")
    review_invite_ttl_h: float = Field(
        72.0, gt=0, description="Hours a one-time invitation link stays valid before it is used."
    )
    review_study_display_size: int = Field(
        768,
        ge=64,
        le=4096,
        description="Reader-study images are centre-cropped square and resized to this many pixels, so "
        "that neither size nor aspect ratio tells real from synthetic.",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @field_validator("auth_secret_file", "tls_cert_file", "tls_key_file", "tls_client_ca_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, v: Any) -> Any:
        return None if isinstance(v, str) and not v.strip() else v  # HIPGEN_AUTH_SECRET_FILE= means off

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
        path = config_file()
        if path is not None:
            if not path.is_file():
                raise InputError(path, f"config file not found (from {CONFIG_ENV} or --config)")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def config_file() -> Path | None:
    """The TOML config file in force: the one passed to :func:`get_settings`, else ``$HIPGEN_CONFIG``."""
    explicit = _config_file.get()
    if explicit is not None:
        return explicit
    raw = os.environ.get(CONFIG_ENV, "").strip()
    return Path(raw) if raw else None


def get_settings(config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Read the settings now (not cached: services call it once at start-up).

    ``config_file`` takes the place of ``$HIPGEN_CONFIG``; ``overrides`` beat every other source.
    Raises ``pydantic.ValidationError`` naming each bad value, or :class:`hipgen.errors.InputError`
    when the config file does not exist.

    >>> get_settings(port=0).port
    0
    """
    token = _config_file.set(Path(config_file) if config_file is not None else None)
    try:
        return Settings(**overrides)
    finally:
        _config_file.reset(token)


def env_var(name: str) -> str:
    """Environment variable of a setting: ``port`` -> ``HIPGEN_PORT``."""
    return f"{ENV_PREFIX}{name.upper()}"


def env_vars() -> list[str]:
    """Every environment variable hipgen's settings read, ``HIPGEN_CONFIG`` first."""
    return [CONFIG_ENV, *(env_var(n) for n in Settings.model_fields)]


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    if annotation is Path or set(typing.get_args(annotation)) == {Path, type(None)}:
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def _default_text(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1_000_000:
        return f"`{value:_}`"  # 64_000_000 reads better than 64000000, and is valid TOML and Python
    return f"`{value}`"


def settings_table_markdown() -> str:
    """Markdown table of every setting: name, environment variable, type, default, description."""
    rows = [
        "| Setting | Environment variable | Type | Default | Description |",
        "|---|---|---|---|---|",
        f"| — | `{CONFIG_ENV}` | path | unset | TOML file with any of the settings below as top-level "
        "keys; environment variables override it. |",
    ]
    for name, info in Settings.model_fields.items():
        desc = (info.description or "").replace("|", "\\|")
        rows.append(
            f"| `{name}` | `{env_var(name)}` | {_type_name(info.annotation)} | {_default_text(info.default)} "
            f"| {desc} |"
        )
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hipgen.settings", description="Print hipgen's settings.")
    parser.add_argument("--effective", action="store_true", help="print the values in force, as JSON")
    args = parser.parse_args(argv)
    if args.effective:
        print(json.dumps(get_settings().model_dump(mode="json"), indent=2))
    else:
        sys.stdout.write(settings_table_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
