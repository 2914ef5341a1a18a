"""Worker settings: one class, read from ``UPSTREAM_*`` environment variables.

Example: ``UPSTREAM_KAFKA_BOOTSTRAP_SERVERS=broker:9092 UPSTREAM_BATCH_MAX_SIZE=64``. List
values are JSON (``UPSTREAM_TRIGGER_ACTIONS='["conversion","click"]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared_model.contract import ActionType, ContractError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="UPSTREAM_", extra="ignore", populate_by_name=True)

    # --- Kafka --------------------------------------------------------------------------------
    kafka_bootstrap_servers: str = "localhost:9092"  # comma-separated host:port list
    events_topic: str = "user-events"
    dead_letter_topic: str = "user-events-dlq"
    # Refresh requests from the backfill (contract.RefreshRequest), keyed by user; "" = none.
    refresh_topic: str = "user-refresh"
    group_id: str = "upstream-encoder"
    client_id: str = "upstream-worker"
    # Passed through to kafka-python as-is (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL).
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None  # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, ...
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    # Group timing. kafka-python's defaults make a join take ~20 s on Tansu; tests use small ones.
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    max_poll_records: int = 500
    poll_timeout_ms: int = 100  # also bounds how long a finished batch waits for its commit
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"

    # --- Redis --------------------------------------------------------------------------------
    redis_url: str = "redis://localhost:6379/0"  # rediss:// for TLS
    redis_password: SecretStr | None = None  # overrides a password in the URL
    # Redis Cluster: redis_url names any one node (a seed); the client discovers the others.
    redis_cluster: bool = False
    # CA bundle for rediss:// with a private CA
    redis_tls_ca_file: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("UPSTREAM_REDIS_TLS_CA_FILE", "UPSTREAM_REDIS_SSL_CA_CERTS"),
    )
    # Socket timeout of every Redis call; a write that times out is retried.
    redis_timeout_ms: float = Field(
        default=5000.0, gt=0, validation_alias=AliasChoices("UPSTREAM_REDIS_TIMEOUT_MS")
    )
    # The old name of redis_timeout_ms, in seconds; when set it wins (deployed configs).
    redis_socket_timeout_s: float | None = Field(default=None, gt=0, exclude=True)

    # --- history store ------------------------------------------------------------------------
    history_cap_engagement: int = Field(2000, gt=0)  # clicks, conversions, ... per user
    history_cap_impression: int = Field(2000, gt=0)  # impressions and views per user
    history_ttl_s: int = Field(0, ge=0)  # 0 = history keys never expire

    # --- triggers -----------------------------------------------------------------------------
    trigger_actions: list[str] = ["conversion"]
    # Also refresh a user once this many new events were appended since the last embedding
    # (0 disables the count trigger).
    refresh_every_n_events: int = Field(0, ge=0)
    # Also refresh an active user whose embedding (of this worker's model version) was computed
    # longer ago than this (0 disables the age trigger; costs one pipelined read per poll).
    refresh_max_age_s: int = Field(0, ge=0)

    # --- backfill -----------------------------------------------------------------------------
    # Backfill requests fill only spare capacity: at most this many are handed to the batcher,
    # and only while no event-triggered refresh is pending or encoding.
    backfill_max_per_batch: int = Field(8, gt=0)
    # Seconds between measurements of this model version's embedding coverage (SCANs over
    # history and embedding keys; gauges upstream_embedding_coverage_ratio); 0 disables.
    coverage_interval_s: float = Field(60.0, ge=0)

    # --- batching and encoding ----------------------------------------------------------------
    batch_max_size: int = Field(32, gt=0)  # users per encode
    batch_max_wait_ms: int = Field(50, ge=0)  # how long the first user waits for company
    checkpoint_path: Path = Path("artifacts/demo/upstream")
    history_length: int | None = None  # T events per user; None = the checkpoint's max_seq_len
    device: str = "auto"  # auto (cuda when present), cpu, cuda, cuda:1
    # auto = bf16 on CUDA and on a CPU with native bf16 matmul (AVX512-BF16 / AMX; 2.9x the
    # fp32 encode rate on a 2-vCPU AMX Xeon at T = 1000), float32 elsewhere (AVX2-only CPUs
    # emulate bf16, several times slower); none = float32 everywhere
    autocast: Literal["auto", "bf16", "none"] = "auto"
    torch_threads: int = Field(0, ge=0)  # 0 = torch's default

    # --- embedding store ----------------------------------------------------------------------
    embedding_dtype: Literal["float16", "float32"] = "float16"
    embedding_ttl_s: int = Field(7 * 24 * 3600, ge=0)  # 0 = never expires

    # --- operations ---------------------------------------------------------------------------
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9100  # 0 = pick a free port (tests), -1 = no HTTP server
    shutdown_timeout_s: float = 30.0  # SIGTERM: longest wait for the in-flight batch
    log_level: str = "INFO"

    @model_validator(mode="before")
    @classmethod
    def _renamed_arguments(cls, data: Any) -> Any:
        """Accept the old keyword name ``redis_ssl_ca_certs``."""
        if isinstance(data, dict) and "redis_ssl_ca_certs" in data:
            data = dict(data)
            data["redis_tls_ca_file"] = data.pop("redis_ssl_ca_certs")
        return data

    @model_validator(mode="after")
    def _seconds_to_ms(self) -> Settings:
        if self.redis_socket_timeout_s is not None:
            self.redis_timeout_ms = self.redis_socket_timeout_s * 1000
        return self

    @field_validator("trigger_actions")
    @classmethod
    def _known_actions(cls, value: list[str]) -> list[str]:
        try:
            return [ActionType.parse(a).name.lower() for a in value]
        except ContractError as e:
            raise ValueError(str(e)) from None

    @property
    def trigger_action_types(self) -> frozenset[ActionType]:
        return frozenset(ActionType.parse(a) for a in self.trigger_actions)

    def kafka_client_config(self) -> dict[str, Any]:
        """Connection and security settings shared by the consumer and the producer."""
        config: dict[str, Any] = {
            "bootstrap_servers": self.kafka_bootstrap_servers.split(","),
            "client_id": self.client_id,
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            config["sasl_mechanism"] = self.kafka_sasl_mechanism
            config["sasl_plain_username"] = self.kafka_sasl_username
            if self.kafka_sasl_password is not None:
                config["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value()
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if (value := getattr(self, f"kafka_{name}")) is not None:
                config[name] = value
        return config
