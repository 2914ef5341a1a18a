"""The peer the ranker benchmark compares against: what a team would build without this project.

The same online checkpoint served by LitServe (FastAPI-based) with its dynamic batching on,
features read with plain redis-py (synchronous, history members read WITHSCORES, each record
decoded with ``HistoryRecord.decode``), and every candidate scored as an independent row: the
model's reference forward on N rows of (history, context, candidate), no shared prefix. Rows
of all requests in a LitServe batch run in one forward.

    python -m loadtests.bench.peer_litserve --port 8100 --checkpoint DIR --redis-url URL

``POST /predict`` takes the ranker's request body (user_id, context, candidates with inline
content embeddings or a ``content_id``, read from Redis with the history) and answers
``{"candidates": [{index, p_ctr, p_cvr, score}, ...]}`` (index: the candidate's position in the
request) sorted by score; ``GET /health`` is 200 once the model is loaded.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import litserve as ls
import redis
import torch

from shared_model.checkpoint import load_checkpoint
from shared_model.contract import (
    EMBEDDING_FIELD_RECORD,
    HISTORY_SOURCES,
    ContractError,
    EmbeddingRecord,
    HistoryRecord,
    content_embedding_key,
    embedding_key,
    history_key,
    merge_histories,
    stable_hash,
)
from shared_model.features import Candidates, Context, EventBatch, UpstreamFeature

Rows = tuple[EventBatch, Context, Candidates, UpstreamFeature]  # N rows of one request


class PeerAPI(ls.LitAPI):
    def __init__(self, checkpoint: str, redis_url: str, threads: int, **batching: Any) -> None:
        super().__init__(**batching)
        self.checkpoint, self.redis_url, self.threads = checkpoint, redis_url, threads

    def setup(self, device: str) -> None:
        torch.set_num_threads(self.threads)
        ckpt = load_checkpoint(self.checkpoint, stage="online")
        self.model, self.cfg = ckpt.model.eval(), ckpt.config
        self.upstream_version = ckpt.metadata.get("upstream_model_version")
        self.redis = redis.Redis.from_url(self.redis_url)

    def decode_request(self, request: dict) -> Rows:
        cfg, T, user = self.cfg, self.cfg.max_seq_len, request["user_id"]
        cands = request["candidates"]
        by_id = [x["content_id"] for x in cands if "content_embedding" not in x]
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(embedding_key(user), EMBEDDING_FIELD_RECORD)
        for source in HISTORY_SOURCES:
            pipe.zrange(history_key(user, source), -T, -1, withscores=True)
        if by_id:
            pipe.mget([content_embedding_key(c) for c in by_id])
        raw_embedding, *histories = pipe.execute()
        looked_up = dict(zip(by_id, histories.pop(), strict=True)) if by_id else {}
        sources = []
        for members in histories:
            records = []
            for member, _score in members:
                try:
                    records.append(HistoryRecord.decode(member))
                except ContractError:
                    continue
            sources.append(records)
        history = merge_histories(*sources, limit=T)
        upstream = UpstreamFeature.absent(1, cfg.d_upstream)
        if raw_embedding is not None:
            try:
                record = EmbeddingRecord.decode(raw_embedding)
            except ContractError:
                record = None
            if (
                record is not None
                and record.model_version == self.upstream_version
                and len(record.vector) == cfg.d_upstream
            ):
                upstream = UpstreamFeature(
                    torch.tensor([record.vector]), torch.ones(1, dtype=torch.bool)
                )
        now = request["context"].get("time_ms") or int(time.time() * 1000)
        c = request["context"]
        ctx = Context.make([now], [user], [c["surface"]], [c["device"]])
        content = [self._content(x, looked_up) for x in cands]
        candidates = Candidates(
            ad_hash=torch.tensor([stable_hash(x["ad_id"]) for x in cands]),
            advertiser_hash=torch.tensor([stable_hash(x["advertiser_id"]) for x in cands]),
            content=torch.tensor([v or [0.0] * cfg.content_dim for v in content]),
            has_content=torch.tensor([v is not None for v in content]),
            floats=torch.tensor([x["floats"] for x in cands]),
        )
        events = EventBatch.from_records([history], T, cfg.content_dim)
        N = len(cands)
        # One independent row per candidate: the user's history and context repeated N times.
        return (
            events.repeat(N),  # (N, T)
            ctx.repeat(N),  # (N,)
            candidates,  # (N,)
            UpstreamFeature(upstream.embedding.expand(N, -1), upstream.present.expand(N)),
        )

    def _content(self, candidate: dict, looked_up: dict[str, bytes | None]) -> list | None:
        """A candidate's content vector: inline, or its Redis record; None when missing."""
        if "content_embedding" in candidate:
            return candidate["content_embedding"]
        raw = looked_up.get(candidate["content_id"])
        if raw is None:
            return None
        try:
            return list(EmbeddingRecord.decode(raw, expected_dim=self.cfg.content_dim).vector)
        except ContractError:
            return None

    def batch(self, inputs: list[Rows]) -> list[Rows]:
        return inputs

    @torch.inference_mode()
    def predict(self, batch: list[Rows]) -> list[torch.Tensor]:
        events = EventBatch.cat([r[0] for r in batch], self.cfg.max_seq_len)  # (sum N, T)
        ctx = Context(
            *(torch.cat([getattr(r[1], f) for r in batch]) for f in Context.__dataclass_fields__)
        )
        cands = Candidates(
            *(torch.cat([getattr(r[2], f) for r in batch]) for f in Candidates.__dataclass_fields__)
        )
        upstream = UpstreamFeature(
            torch.cat([r[3].embedding for r in batch]), torch.cat([r[3].present for r in batch])
        )
        probs = torch.sigmoid(self.model(events, ctx, cands, upstream).float())  # (sum N, 2)
        return list(probs.split([len(r[2]) for r in batch]))

    def unbatch(self, output: list[torch.Tensor]) -> list[torch.Tensor]:
        return output

    def encode_response(self, probs: torch.Tensor, context: dict | None = None) -> dict:
        rows = probs.tolist()
        scored = [{"p_ctr": p[0], "p_cvr": p[1], "score": p[0] * p[1]} for p in rows]
        order = sorted(range(len(scored)), key=lambda i: -scored[i]["score"])
        return {"candidates": [{"index": i, **scored[i]} for i in order]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-timeout-s", type=float, default=0.005)
    args = parser.parse_args(argv)
    api = PeerAPI(
        args.checkpoint,
        args.redis_url,
        args.threads,
        max_batch_size=args.max_batch_size,
        batch_timeout=args.batch_timeout_s,
    )
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=120)
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()
