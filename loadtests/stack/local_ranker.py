"""A ranker to load-test on this machine: redis-server + one uvicorn ranker, Redis seeded.

Uses the trained demo checkpoint (``artifacts/demo/online``) when present (and ``use_trained``),
else ``online_config()`` with random weights saved to a scratch directory (latency does not
depend on the weights, but it does on the config: the demo checkpoint is much smaller);
``checkpoint_note`` says which. Redis gets the load-test population (``traffic.seed_redis``):
histories of T events and fresh/stale upstream embeddings in the version the ranker expects,
and content vectors for the ad catalogue.

    with LocalRanker(run_dir, population) as ranker:
        ...  # ranker.url
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Self

from loadtests.locust.traffic import Population, seed_redis
from loadtests.stack.checkpoints import random_checkpoint
from loadtests.stack.servers import LOOPBACK, RedisServer, ServiceProcess, StartStop, free_port
from ranker_service.__main__ import UVICORN_FLAGS
from shared_model.checkpoint import load_checkpoint
from shared_model.config import LLaTTEConfig, online_config

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_ONLINE = REPO_ROOT / "artifacts" / "demo" / "online"
RANDOM_UPSTREAM_VERSION = "loadtest-upstream-v1"


def describe(cfg: LLaTTEConfig) -> str:
    return f"T={cfg.max_seq_len}, d_model={cfg.d_model}, L={cfg.n_layers}, pyramid={cfg.pyramid}"


def online_checkpoint(
    scratch: Path, config: LLaTTEConfig | None = None, use_trained: bool = True
) -> tuple[Path, str]:
    """(checkpoint dir, a sentence saying which) for the ranker under test."""
    if use_trained and config is None and (DEMO_ONLINE / "config.json").is_file():
        ckpt = load_checkpoint(DEMO_ONLINE, stage="online")
        return DEMO_ONLINE, (
            f"trained demo checkpoint artifacts/demo/online ({ckpt.model_version}; "
            f"{describe(ckpt.config)})"
        )
    cfg = config or online_config()
    path = scratch / "online"
    version = random_checkpoint(path, cfg, seed=0, upstream_model_version=RANDOM_UPSTREAM_VERSION)
    what = "online_config()" if config is None else "a test config"
    return path, f"{what} with random weights ({version}; {describe(cfg)})"


class LocalRanker(StartStop):
    """redis-server and a ranker process on free loopback ports, stopped on exit."""

    def __init__(
        self,
        run_dir: Path,
        population: Population,
        *,
        config: LLaTTEConfig | None = None,
        history_length: int | None = None,
        ranker_env: dict[str, str] | None = None,
        use_trained: bool = True,
        ready_timeout_s: float = 120.0,
    ) -> None:
        self.run_dir = run_dir
        self.population = population
        self.config = config
        self.history_length = history_length
        self.ranker_env = ranker_env or {}
        self.use_trained = use_trained
        self.ready_timeout_s = ready_timeout_s
        self.redis: RedisServer | None = None
        self.ranker: ServiceProcess | None = None
        self.port = 0
        self.checkpoint_note = ""
        self.model_config: LLaTTEConfig | None = None
        self._scratch = tempfile.TemporaryDirectory(prefix="loadtest-ckpt-")

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> Self:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            path, self.checkpoint_note = online_checkpoint(
                Path(self._scratch.name), self.config, self.use_trained
            )
            ckpt = load_checkpoint(path, stage="online")
            cfg = self.model_config = ckpt.config
            upstream = ckpt.metadata.get("upstream_model_version") or RANDOM_UPSTREAM_VERSION
            self.redis = RedisServer().start()
            seed_redis(
                self.redis.client(),
                self.population,
                history_length=self.history_length or cfg.max_seq_len,
                content_dim=cfg.content_dim,
                d_upstream=cfg.d_upstream,
                upstream_model_version=upstream,
            )
            self.port = free_port()
            env = {
                "RANKER_REDIS_URL": self.redis.url,
                "RANKER_CHECKPOINT_PATH": str(path),
                "RANKER_LOG_LEVEL": "WARNING",
                **self.ranker_env,
            }
            self.ranker = ServiceProcess(
                "uvicorn", "ranker_service.main:app", "--host", LOOPBACK, "--port", str(self.port),
                *UVICORN_FLAGS, "--log-level", "warning",
                env=env, name="ranker", log_path=self.run_dir / "ranker.log",
            ).start()  # fmt: skip
            self.ranker.wait_ready(f"{self.url}/readyz", timeout=self.ready_timeout_s)
        except BaseException:
            self.stop()
            raise
        log.info("ranker %s (%s)", self.url, self.checkpoint_note)
        return self

    def stop(self) -> None:
        if self.ranker is not None:
            with contextlib.suppress(Exception):
                self.ranker.stop(timeout=15)
        if self.redis is not None:
            with contextlib.suppress(Exception):
                self.redis.stop()
        self._scratch.cleanup()
