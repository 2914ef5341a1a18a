"""Pure compute: user histories -> embedding records. No Kafka, no Redis.

Shape legend: B users in a batch, T history length, U = d_summary (2048 for the real model).

The reference time of an encode is the user's newest event, not the wall clock: the embedding
is then a function of the history alone, so a replay or a second worker encoding the same user
produces the same vector, and at-least-once delivery can only ever rewrite identical values.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from shared_model.checkpoint import load_checkpoint
from shared_model.config import LLaTTEConfig
from shared_model.contract import EmbeddingDType, EmbeddingRecord, HistoryRecord, stable_hash
from shared_model.features import (
    UPSTREAM_DEVICE,  # shared with training
    Context,
    EventBatch,
)
from shared_model.inference import encode_user
from shared_model.upstream import UpstreamModel

log = logging.getLogger(__name__)

FLOAT16_MAX = 65504.0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_autocast(mode: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on a GPU; on a CPU without bf16 matmul units it only slows things down."""
    if mode == "bf16" or (mode == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def length_groups(lengths: Sequence[int]) -> list[list[int]]:
    """Row indices grouped by history length into sqrt(2)-wide buckets, longest first.

    A group's rows are padded only to its own longest history, so within a group padding is
    under 30% of the positions; the extra forward per bucket is cheap next to attention
    over padding (cost grows faster than linearly in T).
    """
    buckets: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        buckets.setdefault(int(2 * math.log2(n)) if n > 1 else -1, []).append(i)
    return [buckets[k] for k in sorted(buckets, reverse=True)]


@dataclass(frozen=True)
class EncodedUser:
    user_id: str
    record: EmbeddingRecord


class UserEncoder:
    """The upstream model on one device, turning B histories into B embedding records.

    Args:
        model: an UpstreamModel in eval mode on ``device``.
        config: its config (``max_seq_len`` bounds T).
        model_version: stored in every record.
        history_length: T events read per user; defaults to ``config.max_seq_len``.
        dtype: the stored vector's dtype.
        autocast_dtype: e.g. torch.bfloat16 on a GPU; None = float32.
    """

    def __init__(
        self,
        model: UpstreamModel,
        config: LLaTTEConfig,
        model_version: str,
        history_length: int | None = None,
        dtype: EmbeddingDType = EmbeddingDType.FLOAT16,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        if not config.is_upstream:
            raise ValueError("UserEncoder needs an upstream-stage model")
        self.model = model.eval()
        self.config = config
        self.model_version = model_version
        self.history_length = history_length or config.max_seq_len
        if self.history_length > config.max_seq_len:
            raise ValueError(
                f"history_length {self.history_length} exceeds the model's max_seq_len "
                f"{config.max_seq_len}"
            )
        self.dtype = dtype
        self.autocast_dtype = autocast_dtype
        self.device = next(model.parameters()).device

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str = "auto",
        autocast: str = "auto",
        history_length: int | None = None,
        dtype: EmbeddingDType = EmbeddingDType.FLOAT16,
    ) -> UserEncoder:
        dev = resolve_device(device)
        ckpt = load_checkpoint(path, stage="upstream", device=dev)
        log.info("loaded %s from %s on %s", ckpt.model_version, path, dev)
        return cls(
            ckpt.model,
            ckpt.config,
            ckpt.model_version,
            history_length,
            dtype,
            resolve_autocast(autocast, dev),
        )

    @property
    def dim(self) -> int:
        return self.config.d_summary

    def context(self, user_ids: Sequence[str], histories: Sequence[list[HistoryRecord]]) -> Context:
        newest = [h[-1] if h else None for h in histories]
        B = len(user_ids)
        return Context(
            request_time_ms=torch.tensor([r.timestamp_ms if r else 0 for r in newest]),  # (B,)
            user_hash=torch.tensor([stable_hash(u) for u in user_ids]),  # (B,)
            surface_hash=torch.tensor([r.surface_hash if r else 0 for r in newest]),  # (B,)
            device_hash=torch.full((B,), stable_hash(UPSTREAM_DEVICE)),  # (B,)
        )

    def embed(
        self,
        user_ids: Sequence[str],
        histories: Sequence[list[HistoryRecord]],
        length_aware: bool = True,
    ) -> torch.Tensor:
        """B histories (oldest first) -> (B, U) float32 on the CPU.

        ``length_aware`` sorts the users into length groups and runs each group cut to its
        longest valid history; ``False`` is the reference that pads every user to T.
        """
        histories = [list(h)[-self.history_length :] for h in histories]
        if not length_aware:
            return self._embed_padded(user_ids, histories, self.history_length)
        out = torch.empty(len(histories), self.dim)
        for rows in length_groups([len(h) for h in histories]):
            length = max(1, max(len(histories[i]) for i in rows))
            out[rows] = self._embed_padded(
                [user_ids[i] for i in rows], [histories[i] for i in rows], length
            )
        return out

    def _embed_padded(
        self, user_ids: Sequence[str], histories: Sequence[list[HistoryRecord]], length: int
    ) -> torch.Tensor:
        """Histories left-padded to ``length`` -> (B, U). Valid rows never read padding, so
        any length >= the longest history gives the same vectors."""
        events = EventBatch.from_records(histories, length, self.config.content_dim)
        ctx = self.context(user_ids, histories)
        emb = encode_user(self.model, events, ctx, autocast_dtype=self.autocast_dtype)  # (B, U)
        return emb.cpu()

    def encode(
        self,
        user_ids: Sequence[str],
        histories: Sequence[list[HistoryRecord]],
        now_ms: int | None = None,
    ) -> list[EncodedUser]:
        """B histories -> B records stamped with the newest event each encode saw."""
        emb = self.embed(user_ids, histories)
        if not torch.isfinite(emb).all():
            # A record with NaNs would be rejected by every reader; store zeros and say so.
            log.warning("non-finite embedding values for %d user(s)", len(user_ids))
            emb = torch.nan_to_num(emb, nan=0.0, posinf=0.0, neginf=0.0)
        if self.dtype is EmbeddingDType.FLOAT16:
            emb = emb.clamp(-FLOAT16_MAX, FLOAT16_MAX)  # struct's 'e' raises on overflow
        computed_at = now_ms if now_ms is not None else int(time.time() * 1000)
        out = []
        for user_id, history, vector in zip(user_ids, histories, emb.tolist(), strict=True):
            history = history[-self.history_length :]
            record = EmbeddingRecord(
                vector=tuple(vector),
                model_version=self.model_version,
                computed_at_ms=computed_at,
                newest_event_ms=max((r.timestamp_ms for r in history), default=0),
                history_length=len(history),
                dtype=self.dtype,
            )
            out.append(EncodedUser(user_id, record))
        return out
