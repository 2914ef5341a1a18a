"""The model off the event loop: dedicated inference thread(s), hot-swappable checkpoints.

Why one intra-op thread: the 2-core box serves one request's model pass with one intra-op
thread (see settings.torch_threads), leaving the other core to the event loop, which keeps
accepting, parsing and validating requests and reading Redis meanwhile; OpenMP workers
spanning both cores spin on each other under load. ``settings.inference_threads`` > 1 runs
that many model calls side by side instead (different batches, one intra-op thread each).
A float32 model scores with recorded TorchScript graphs (``shared_model.traced``,
``settings.traced``), which hold the GIL for none of the step, so the event loop and the
other inference thread never wait for a model call to reach its next op.
A process pool would add a pickle round trip of the inputs and outputs per request and a
copy of the weights per process. Requests queue for the threads in arrival order, and those
that queued while they were busy are scored together (ranker_service.batching).

Reload: the new checkpoint is loaded and warmed in a separate short-lived thread while the old
one keeps serving, then the ``bundle`` reference is swapped. A request captures the bundle once,
so it validates and scores against one model even if a reload lands in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

from ranker_service.settings import Settings
from ranker_service.thread_cpu import INFERENCE_THREAD_PREFIX
from shared_model.checkpoint import CheckpointError, load_checkpoint
from shared_model.config import LLaTTEConfig
from shared_model.contract import ActionType, HistoryRecord, stable_hash
from shared_model.features import Candidates, Context, EventBatch, UpstreamFeature
from shared_model.inference import (
    cast_weights_for_autocast,
    resolve_autocast,
    score,
    score_many,
)
from shared_model.process import freeze_long_lived_objects
from shared_model.quantize import quantize_int8
from shared_model.ranker import RankerModel
from shared_model.traced import TracedScorer

log = logging.getLogger(__name__)
R = TypeVar("R")


@dataclass(frozen=True)
class ModelBundle:
    """A loaded, warmed ranker and what the service needs to know about it."""

    model: RankerModel
    config: LLaTTEConfig
    model_version: str
    upstream_model_version: str | None  # the upstream the ranker was trained with
    path: Path
    autocast_dtype: torch.dtype | None = None  # settings.autocast resolved; None = float32
    traced: TracedScorer | None = None  # the recorded graphs it scores with (settings.traced)
    int8: bool = False  # its Linear layers quantized (settings.quantize)

    @property
    def precision(self) -> str:
        """What the model computes in: "int8", "bfloat16" or "float32"."""
        if self.int8:
            return "int8"
        return str(self.autocast_dtype or torch.float32).removeprefix("torch.")


def configure_torch(settings: Settings) -> None:
    """Thread settings for this process (interop can only be set before first use)."""
    torch.set_num_threads(settings.torch_threads)
    # RuntimeError when already set or parallel work already ran (tests, several apps).
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(settings.torch_interop_threads)


def load_bundle(path: Path, settings: Settings) -> ModelBundle:
    """Load an online checkpoint and warm it up (blocking)."""
    ckpt = load_checkpoint(path, stage="online", device=settings.device)
    upstream = ckpt.metadata.get("upstream_model_version")
    if not isinstance(upstream, str) or not upstream:
        log.warning(
            "%s has no metadata.upstream_model_version: every upstream embedding will be a "
            "version mismatch and the ranker will rank without it",
            path,
        )
        upstream = None
    autocast = resolve_autocast(settings.autocast, torch.device(settings.device))
    model = cast_weights_for_autocast(ckpt.model, autocast)  # once here, not per request
    if settings.quantize == "int8":
        model = quantize_int8(model)
    traced = TracedScorer(model) if settings.traced else None
    bundle = ModelBundle(
        model,
        ckpt.config,
        ckpt.model_version,
        upstream,
        Path(path),
        autocast,
        traced,
        int8=settings.quantize == "int8",
    )
    warm_up(bundle, settings.warmup_candidates)
    return bundle


def warm_up(bundle: ModelBundle, candidate_counts: list[int]) -> None:
    """Run every path a request takes (allocator, kernels) before the ranker reports ready;
    with a traced scorer, this records the graphs of the usual cases (one user, several;
    histories full and of unequal lengths) so that live requests rarely wait for one."""
    cfg = bundle.config
    T, E, F = cfg.max_seq_len, cfg.content_dim, cfg.n_candidate_floats
    now = int(time.time() * 1000)
    g = torch.Generator().manual_seed(0)
    records = [
        HistoryRecord(
            now - 60_000 * (T - i),
            ActionType.CLICK,
            i,
            stable_hash("feed"),
            i,
            1.0,
            tuple(torch.randn(E, generator=g).tolist()) if E else None,
        )
        for i in range(T)
    ]
    events = EventBatch.from_records([records], T, E)
    shorter = EventBatch.from_records([records[T // 2 :]], T, E)  # a left-padded history
    ctx = Context.make([now], ["warmup"], ["feed"], ["web"])
    scorer, dtype = bundle.traced, bundle.autocast_dtype

    def run(requests: list[tuple[EventBatch, Context, Candidates, UpstreamFeature]]) -> None:
        if scorer is not None:
            scorer.score_many(requests, dtype)
        elif len(requests) == 1:
            score(bundle.model, *requests[0], autocast_dtype=dtype)
        else:
            score_many(bundle.model, requests, autocast_dtype=dtype)

    start = time.perf_counter()
    for n in candidate_counts:
        cands = Candidates(
            ad_hash=torch.arange(n),
            advertiser_hash=torch.arange(n),
            content=torch.randn(n, E, generator=g),
            has_content=torch.ones(n, dtype=torch.bool),
            floats=torch.randn(n, F, generator=g),
        )
        for upstream in (
            UpstreamFeature.absent(1, cfg.d_upstream),
            UpstreamFeature(torch.randn(1, cfg.d_upstream, generator=g), torch.ones(1, dtype=bool)),
        ):
            run([(events, ctx, cands, upstream)])
        # The micro-batched path (two users' prefixes in one pass) has its own shapes.
        for second in (events, shorter):
            run([(events, ctx, cands, upstream), (second, ctx, cands, upstream)])
    log.info(
        "warmed up %s with %s candidates in %.2fs (%s; %s)",
        bundle.model_version,
        candidate_counts,
        time.perf_counter() - start,
        bundle.precision,
        f"{scorer.graphs} graphs recorded in {scorer.record_s:.2f}s" if scorer else "eager",
    )


class ModelRunner:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        configure_torch(settings)
        self._executor = ThreadPoolExecutor(
            max_workers=settings.inference_threads,
            thread_name_prefix=INFERENCE_THREAD_PREFIX,
            # Intra-op settings are per OS thread for OpenMP: set them in the worker too.
            initializer=torch.set_num_threads,
            initargs=(settings.torch_threads,),
        )
        self._reload_lock = asyncio.Lock()
        self.bundle: ModelBundle | None = None

    @property
    def ready(self) -> bool:
        return self.bundle is not None

    async def start(self, path: Path | None = None) -> ModelBundle:
        """Load and warm the startup checkpoint (in the inference thread)."""
        path = path or self.settings.checkpoint_path
        loop = asyncio.get_running_loop()
        self.bundle = await loop.run_in_executor(self._executor, load_bundle, path, self.settings)
        log.info("serving %s from %s", self.bundle.model_version, path)
        return self.bundle

    async def reload(self, path: Path | None = None) -> ModelBundle:
        """Load + warm a new checkpoint beside the serving one, then swap. CheckpointError
        leaves the serving model in place."""
        path = path or (self.bundle.path if self.bundle else self.settings.checkpoint_path)
        async with self._reload_lock:
            bundle = await asyncio.to_thread(self._load_in_side_thread, path)
            old, self.bundle = self.bundle, bundle
            freeze_long_lived_objects()  # the new model's objects too (cheap: the rest is frozen)
        log.info("reloaded %s -> %s from %s", old and old.model_version, bundle.model_version, path)
        return bundle

    def _load_in_side_thread(self, path: Path) -> ModelBundle:
        torch.set_num_threads(self.settings.torch_threads)
        return load_bundle(path, self.settings)

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The inference threads (settings.inference_threads workers): the batcher schedules
        its drains here."""
        return self._executor

    async def run(self, fn: Callable[..., R], *args: object) -> R:
        """Run ``fn(*args)`` in the inference thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


__all__ = [
    "CheckpointError",
    "ModelBundle",
    "ModelRunner",
    "load_bundle",
    "warm_up",
]
