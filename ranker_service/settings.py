"""Service settings: one ``Settings`` object, read from ``RANKER_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the ranker. ``RANKER_REDIS_URL=rediss://:pw@host:6380/0`` etc."""

    model_config = SettingsConfigDict(
        env_prefix="RANKER_", env_file=None, extra="ignore", populate_by_name=True
    )

    # --- Redis (upstream embedding + history) -------------------------------------------------
    # redis:// or rediss:// (TLS); a password goes in the URL (redis://:secret@host:6379/0).
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    redis_tls_ca_file: Path | None = None  # CA bundle for rediss:// with a private CA
    # Redis Cluster: redis_url names any one node (a seed); the client discovers the others.
    redis_cluster: bool = False
    # The whole Redis read (one pipelined round trip) must finish within this budget, or the
    # request ranks with what it has: no embedding, no stored history. 50 ms, not less: on a
    # 2-core box the loop shares the GIL with the inference thread, and under load a reply can
    # wait ~20-30 ms to be read (the benchmark saw 3% timeouts at 30 ms).
    redis_timeout_ms: float = Field(
        default=50.0,
        gt=0,
        validation_alias=AliasChoices("RANKER_REDIS_TIMEOUT_MS", "RANKER_REDIS_BUDGET_MS"),
    )
    # How the request's read reaches Redis. "multiplexed": every request's commands pipelined
    # on one shared connection, replies parsed by hiredis as they arrive (a late reply is
    # dropped, never read by another request); the event loop spends less than half the CPU
    # per read that redis.asyncio's pipeline costs (docs/benchmarks/features-zen4.md).
    # "redis-py": redis.asyncio's connection pool and pipeline, the reference. "auto":
    # multiplexed on one server, redis-py's cluster client on a Redis Cluster (where
    # "multiplexed" is refused).
    redis_reader: Literal["auto", "multiplexed", "redis-py"] = "auto"
    # Connections of the redis-py reader (per node on a cluster).
    redis_max_connections: int = Field(default=64, gt=0)
    # The multiplexed reader closes its connection when a reply has been outstanding this long
    # (a server that stopped answering without closing it) and opens a new one on the next read.
    redis_stale_s: float = Field(default=5.0, gt=0)
    # Switch the upstream embedding lookup off (the benchmark's baseline; an emergency lever).
    upstream_lookup_enabled: bool = True
    # An embedding older than this (request time - computed_at_ms) is "stale" and not used.
    embedding_max_age_s: float = Field(default=7 * 24 * 3600.0, gt=0)

    # In-process cache of candidate content vectors (by content id): at most this many
    # entries, least recently used dropped first (0 = off).
    content_cache_entries: int = Field(default=100_000, ge=0)
    # A cached content vector is kept this long at most: a vector rewritten in Redis is used
    # within this time.
    content_cache_ttl_s: float = Field(default=300.0, gt=0)

    # --- model --------------------------------------------------------------------------------
    checkpoint_path: Path = Path("artifacts/demo/online")
    device: str = "cpu"
    # bf16 autocast for scoring: "none" (float32, the reference), "bf16", or "auto": bf16 on a
    # GPU and on a CPU with native bf16 matmul (AVX512-BF16 / AMX), float32 elsewhere. The
    # Linear weights are cast to bf16 once at load. On AMX, micro-batched requests cost about
    # half as much as in float32, one request alone about as much (docs/benchmarks/
    # scoring-xeon-amx.md); on a 2-vCPU Zen 4 (AVX512-BF16) a bf16 ranker held a P99 under
    # 50 ms up to 10-30 req/s (20 or more in six of eight runs) where float32 held 10 at most
    # (docs/benchmarks/ranker-zen4.md), on a Zen 5 30 req/s in three runs where float32 held
    # 25, 30 and 5 (ranker-zen5.md); on a CPU without native bf16 (AVX2-only) it is several times
    # slower. Trained rankers' test NE moved by at most 5.4e-4 (docs/experiments, "Serving
    # precision").
    autocast: Literal["auto", "bf16", "none"] = "none"
    # "int8": the sequence module's Linear layers (the FFNs, the MLA down-projections, the
    # tokenizer, the readout) scored in dynamic int8 through FBGEMM (shared_model/quantize.py): the
    # lower precision for a CPU without native bf16; "none": float32, the reference. On a 2-vCPU
    # Xeon with its kernels capped at AVX2 the step took 14.3 against 20.5 ms and int8 held a P99
    # under 50 ms up to 30 req/s where float32 held 25 (docs/benchmarks/ranker-xeon-amx-avx2.md;
    # 14.5 against 16.7 ms and the same rates in a run before); on a 2-vCPU Zen 4 with AVX-512 VNNI,
    # 17.4 against 26.1 ms and 30 req/s where float32 held 10 (14.0 against 21.8 ms and the same
    # rates in a run before), and with its kernels capped at AVX2, 22.4 against 22.8 ms and
    # 15 req/s where float32 held none (19.6 against 26.8 ms and 15 where float32 held 5 in a run
    # before; ranker-zen4.md, ranker-zen4-avx2.md);
    # on a 2-vCPU Zen 3 (AVX2 only) in slow patches of its host, 24.7 against 36.1 ms, 33.9
    # against 41.1 ms and 30.6 against 37.2 ms, and neither precision held 2 req/s
    # (ranker-zen3.md and the pages before it).
    # Trained rankers' test NE moved by -0.5e-4 and +3.0e-4 (docs/experiments, "Serving precision").
    # CPU only, with autocast "none". A request's scores depend slightly on the requests
    # micro-batched with it (the 8-bit scale of the activations is per call).
    quantize: Literal["int8", "none"] = "none"
    # 1 intra-op thread on a 2-core box: the other core runs the event loop (JSON, validation,
    # Redis I/O). Two intra-op threads fight the loop for the cores and, under load, show
    # 10-100x latency spikes (OpenMP workers spinning on a busy core); see docs/benchmarks.
    torch_threads: int = Field(default=1, gt=0)
    torch_interop_threads: int = Field(default=1, gt=0)
    # Model calls that may run at once, each on its own thread with torch_threads intra-op
    # threads: with 2, a request that arrives while a batch is being scored starts on the other
    # core instead of queueing (a recorded graph releases the GIL for the whole step, eager
    # torch inside each kernel; no OpenMP barrier spans the two). On a 2-vCPU EPYC, 2 threads
    # served 1.6x the saturation of 1 and held a P99 under 50 ms at a higher rate
    # (docs/benchmarks/ranker.md, ranker-1-thread.md). 1 scores one batch at a time.
    inference_threads: int = Field(default=2, gt=0)
    # Score with recorded TorchScript graphs (shared_model.traced): no per-op Python, the GIL
    # released for the whole step, each float32 graph frozen and optimised for inference
    # (~20 MiB of prepacked weights each; a bf16 graph is replayed as recorded, the eager bf16
    # step's arithmetic); false scores with the eager model, the reference.
    traced: bool = True
    # Answer POST /v1/rank ahead of FastAPI's router (ranker_service.fast_rank): the same
    # handler, parser and error handlers without the router's layers; false serves it through
    # the route, the reference.
    fast_path: bool = True
    # FastAPI's native OpenTelemetry (spans, metrics and logs per request). It records only
    # where an OpenTelemetry SDK provider is configured in the process, and the ranker ships
    # none: its metrics are Prometheus's (/metrics). Off, FastAPI skips its per-request look
    # for a configured provider; on, a provider set up in the process (for example by
    # opentelemetry-instrument) gets FastAPI's spans and metrics.
    fastapi_telemetry: bool = False
    warmup_candidates: list[int] = [1, 10, 100]  # candidate counts run once before ready
    # Cross-request micro-batching: requests that queued while the inference thread was busy
    # are scored together (one encode_history for their prefixes, one decode_queries for all
    # candidates), at most this many per call; 0 or 1 scores every request alone.
    batch_max_requests: int = Field(default=8, ge=0)
    # How long a batch may wait for companions after its oldest request arrived; 0 never
    # waits (an idle thread scores a request at once).
    batch_max_wait_ms: float = Field(default=0.0, ge=0)
    # With several inference threads, a free thread takes its share of the queued requests,
    # ceil(queued / inference_threads), and leaves the rest to the other threads, so a backlog
    # is scored side by side: on a CPU a batch costs nearly the sum of its requests, and every
    # request in it waits for the last. False: a free thread takes up to batch_max_requests
    # (the largest batches, for a device where batching is cheap).
    batch_share: bool = True

    # --- request limits -----------------------------------------------------------------------
    max_candidates: int = Field(default=1000, gt=0)
    max_inline_events: int = Field(default=1000, ge=0)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)

    # --- admin --------------------------------------------------------------------------------
    # POST /admin/reload is disabled (404) unless a token is set; callers send it as a
    # Bearer token.
    reload_token: SecretStr | None = None

    log_level: str = "INFO"

    @model_validator(mode="before")
    @classmethod
    def _renamed_arguments(cls, data: Any) -> Any:
        """Accept the old keyword names (``Settings(redis_budget_ms=...)``)."""
        if isinstance(data, dict):
            for old, new in _RENAMED.items():
                if old in data:
                    data = {new: data[old], **{k: v for k, v in data.items() if k != old}}
        return data

    @model_validator(mode="after")
    def _reader_fits_the_topology(self) -> Settings:
        if self.redis_cluster and self.redis_reader == "multiplexed":
            raise ValueError(
                "redis_reader=multiplexed reads one Redis server; a cluster is read with "
                "redis_reader=auto or redis-py (redis-py's cluster client)"
            )
        return self

    @model_validator(mode="after")
    def _int8_runs_alone_on_the_cpu(self) -> Settings:
        if self.quantize == "int8" and self.autocast != "none":
            raise ValueError(
                f"quantize=int8 scores in int8 and float32: set autocast=none, not "
                f"{self.autocast!r}"
            )
        if self.quantize == "int8" and not self.device.startswith("cpu"):
            raise ValueError(f"quantize=int8 runs on the CPU only, not on {self.device!r}")
        return self

    @property
    def redis_budget_ms(self) -> float:
        """The old name of ``redis_timeout_ms``."""
        return self.redis_timeout_ms


# Old keyword name -> the setting's name now (their environment variables are aliases).
_RENAMED = {"redis_budget_ms": "redis_timeout_ms"}


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (env is read once)."""
    return Settings()
