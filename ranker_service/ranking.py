"""The serving path of ``POST /v1/rank``: Redis read, then features + model in the worker.

1. check the limits that depend on settings and on the loaded model (422 naming the problem);
2. one pipelined Redis read within the budget (embedding, history, content by id);
3. in the inference thread: decode, decide about the embedding, build tensors, score all
   candidates in one shared-history pass; requests that queued meanwhile are scored together
   (ranker_service.batching);
4. record metrics, sort by the ranking score.

The stage CPU counters (``ranker_stage_cpu_seconds``) are thread CPU: exact for the inference
thread; for the event-loop stages (redis, respond) they also count whatever other requests'
coroutines ran meanwhile, so read them at one request in flight.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ranker_service.batching import MicroBatcher, Prepared, Scored
from ranker_service.content_cache import ContentCache
from ranker_service.features import (
    EmbeddingDecision,
    build_candidates,
    check_candidates,
    check_inline_events,
    decide_embedding,
    degradations,
    history_events,
    inline_history,
    ranking_order,
    ranking_scores,
    request_context,
    resolve_content,
    user_events,
)
from ranker_service.metrics import Metrics
from ranker_service.model_runner import ModelBundle, ModelRunner
from ranker_service.request_decoder import RankInput
from ranker_service.schemas import HistorySource, UpstreamStatus
from ranker_service.settings import Settings
from ranker_service.store import FeatureStore, FetchOutcome, UserData
from shared_model.contract import (
    ContractError,
    HistoryRecord,
    content_embedding_key,
    embedding_key,
)

log = logging.getLogger(__name__)


RankResult = dict[str, Any]  # the JSON of a RankResponse, as plain data

# The same few thousand ads' content ids come back in most requests: their keys (and the
# contract's id checks) are kept; an id that fails the checks raises again every time.
_content_key = functools.lru_cache(maxsize=1 << 16)(content_embedding_key)


class RankInputError(ValueError):
    """The request is well-formed JSON but breaks a limit or the model's shapes (-> 422)."""


@dataclass
class _Features:
    """What the response needs from the feature step, beside the probabilities."""

    decision: EmbeddingDecision
    history_length: int
    corrupt_history: int
    content_lookups: dict[str, int]


def _prepare_in_worker(
    bundle: ModelBundle,
    request: RankInput,
    request_time_ms: int,
    inline: list[HistoryRecord] | None,
    data: UserData,
    cached_content: dict[str, np.ndarray],
    content_cache: ContentCache,
    settings: Settings,
) -> Prepared:
    """Decode and build the model inputs, in the inference thread (the batcher scores them)."""
    cfg = bundle.config
    T = cfg.max_seq_len
    decision = decide_embedding(
        data.embedding,
        data.outcome,
        cfg,
        bundle.upstream_model_version,
        request_time_ms,
        int(settings.embedding_max_age_s * 1000),
        enabled=settings.upstream_lookup_enabled,
    )
    corrupt = 0
    if inline is not None:
        history = inline[-T:]
        events, history_length = user_events(history, T, cfg.content_dim), len(history)
    else:
        events, history_length, corrupt = history_events(data.history, T, cfg.content_dim)
    ctx = request_context(
        request_time_ms, request.user_id, request.context.surface, request.context.device
    )
    fresh, lookups = resolve_content(
        request.candidates, data.outcome, data.content, cached_content, cfg.content_dim
    )
    content_cache.put_many(fresh, cfg.content_dim)
    cands = build_candidates(request.candidates, cfg, {**cached_content, **fresh})
    return Prepared(
        bundle.model,
        (events, ctx, cands, decision.feature),
        _Features(decision, history_length, corrupt, lookups),
        bundle.autocast_dtype,
        bundle.traced,
    )


class RankingService:
    def __init__(
        self, settings: Settings, store: FeatureStore, runner: ModelRunner, metrics: Metrics
    ) -> None:
        self.settings, self.store, self.runner, self.metrics = settings, store, runner, metrics
        self.batcher = MicroBatcher(
            runner.executor,
            settings.batch_max_requests,
            settings.batch_max_wait_ms / 1000,
            observe=self._observe_batch,
            lanes=settings.inference_threads if settings.batch_share else 1,
        )
        self.content_cache = ContentCache(
            settings.content_cache_entries, settings.content_cache_ttl_s, metrics
        )

    def _check(
        self, request: RankInput, bundle: ModelBundle
    ) -> tuple[list[HistoryRecord] | None, list[str]]:
        """The request's limits -> its inline history (None: read the stored one) and the
        content ids to look up (each once, in request order); RankInputError names a problem."""
        s = self.settings
        n = len(request.candidates)
        if n > s.max_candidates:
            raise RankInputError(f"too many candidates: {n} > max_candidates={s.max_candidates}")
        by_id: dict[str, None] = {}  # the candidates' content ids without an inline vector
        try:
            # The contract's id rules (printable, no braces) are stricter than the schema's
            # pattern; building the Redis keys checks them before the store would raise.
            embedding_key(request.user_id)
            for c in request.candidates:
                if (cid := c.content_id) is not None:
                    _content_key(cid)
                    if not c.content_embedding:
                        by_id[cid] = None
        except ContractError as e:
            raise RankInputError(str(e)) from None
        if problem := check_candidates(request.candidates, bundle.config):
            raise RankInputError(problem)
        content_ids = list(by_id) if bundle.config.content_dim else []
        if request.events is None:
            return None, content_ids
        if len(request.events) > s.max_inline_events:
            raise RankInputError(
                f"too many inline events: {len(request.events)} > "
                f"max_inline_events={s.max_inline_events}"
            )
        if problem := check_inline_events(request.events, bundle.config):
            raise RankInputError(problem)
        try:
            return inline_history(request.events, request.user_id), content_ids
        except ContractError as e:
            raise RankInputError(str(e)) from None

    async def rank(self, request: RankInput, started: float) -> RankResult:
        bundle = self.runner.bundle
        if bundle is None:  # the route's readiness dependency normally prevents this
            raise RuntimeError("no model loaded")
        inline, content_ids = self._check(request, bundle)
        request_time_ms = request.context.time_ms or int(time.time() * 1000)
        s = self.settings
        cached_content = self.content_cache.get_many(content_ids, bundle.config.content_dim)
        if cached_content:
            content_ids = [c for c in content_ids if c not in cached_content]
        cpu = time.thread_time()
        data = await self.store.fetch(
            request.user_id,
            history_limit=bundle.config.max_seq_len,
            read_embedding=s.upstream_lookup_enabled,
            read_history=inline is None,
            content_ids=content_ids,
            embedding_version=bundle.upstream_model_version,
        )
        m = self.metrics
        stage_cpu = m.stage_cpu_seconds
        m.child(stage_cpu, "redis").inc(time.thread_time() - cpu)
        if data.outcome is not FetchOutcome.SKIPPED:
            m.child(m.redis_seconds, data.outcome.value).observe(data.seconds)
        job = functools.partial(
            _prepare_in_worker,
            bundle,
            request,
            request_time_ms,
            inline,
            data,
            cached_content,
            self.content_cache,
            s,
        )
        scored = await asyncio.wrap_future(self.batcher.submit(job))
        m.child(stage_cpu, "features").inc(scored.prepare_cpu_s)
        m.child(stage_cpu, "score").inc(scored.score_cpu_s)
        cpu = time.thread_time()
        response = self._respond(request, bundle, data, scored, inline is not None, started)
        m.child(stage_cpu, "respond").inc(time.thread_time() - cpu)
        return response

    def _observe_batch(self, batch_size: int, queued_s: list[float]) -> None:
        """Called by the batcher in the inference thread, once per model call."""
        self.metrics.batch_size.observe(batch_size)

    def _respond(
        self,
        request: RankInput,
        bundle: ModelBundle,
        data: UserData,
        scored: Scored,
        inline: bool,
        started: float,
    ) -> RankResult:
        features: _Features = scored.prepared.state
        m, d = self.metrics, features.decision
        m.candidates.observe(len(request.candidates))
        m.model_seconds.observe(scored.model_s)
        m.queue_seconds.observe(scored.queued_s)
        m.child(m.embedding_lookups, d.outcome.value).inc()
        if d.age_ms is not None:
            m.embedding_age_seconds.observe(max(d.age_ms, 0) / 1000)
        if features.corrupt_history:
            m.history_corrupt_records.inc(features.corrupt_history)
            log.warning("user %s: %d corrupt history records skipped", request.user_id,
                        features.corrupt_history)  # fmt: skip
        for outcome, count in features.content_lookups.items():
            if count:
                m.child(m.content_lookups, outcome).inc(count)
        degraded = degradations(
            data.outcome,
            d.outcome,
            not inline,
            features.history_length,
            features.corrupt_history,
            features.content_lookups,
        )
        for item in degraded:
            m.child(m.degraded_requests, item.feature.value, item.reason.value).inc()

        cands = request.candidates
        p = scored.probs.numpy()  # (N, 2) float32, the tensor's memory
        s = ranking_scores(p, [c.bid for c in cands])
        order, probs, scores = ranking_order(s), p.tolist(), s.tolist()
        if inline:
            history_source = HistorySource.INLINE
        elif data.outcome is FetchOutcome.OK:
            history_source = HistorySource.REDIS
        else:
            history_source = HistorySource.NONE
        # The JSON of a RankResponse as plain data (orjson writes it in one pass); no model
        # object per candidate. tests/ranker_service/test_openapi.py holds real responses to
        # the RankResponse schema.
        return {
            "model_version": bundle.model_version,
            "candidates": [
                {
                    "ad_id": cands[i].ad_id,
                    "p_ctr": probs[i][0],
                    "p_cvr": probs[i][1],
                    "score": scores[i],
                }
                for i in order
            ],
            "upstream": {
                "status": UpstreamStatus.USED if d.used else UpstreamStatus.ABSENT,
                "outcome": d.outcome,
                "age_ms": d.age_ms,
                "model_version": d.model_version,
            },
            "history_source": history_source,
            "history_length": features.history_length,
            "degraded": [
                {"feature": x.feature, "reason": x.reason, "count": x.count} for x in degraded
            ],
            "timing": {
                "redis_ms": data.seconds * 1000,
                "model_ms": scored.model_s * 1000,
                "total_ms": (time.perf_counter() - started) * 1000,
            },
        }
