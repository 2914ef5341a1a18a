"""Pure compute: user histories -> embedding records. No Kafka, no Redis.

Shape legend: B users in a batch, T history length, U = d_summary (2048 for the real model).

The reference time of an encode is the user's newest event, not the wall clock: the embedding
is then a function of the history alone, so a replay or a second worker encoding the same user
produces the same vector, and at-least-once delivery can only ever rewrite identical values.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from shared_model.config import LLaTTEConfig
from shared_model.contract import (
    ActionType,
    EmbeddingDType,
    EmbeddingRecord,
    HistoryRecord,
    stable_hash,
)
from shared_model.features import (
    UPSTREAM_DEVICE,  # shared with training
    Context,
    EventBatch,
)
from shared_model.flops import sequence_flops
from shared_model.inference import cast_weights_for_autocast, encode_user, resolve_autocast
from shared_model.upstream import UpstreamModel

log = logging.getLogger(__name__)

FLOAT16_MAX = 65504.0
# The fixed cost of one forward (kernel launches, per-op dispatch), as the FLOPs it could have
# done instead: what a length group must save in padding to be worth running apart. Measured by
# ``UserEncoder.calibrate`` when loaded from a checkpoint; these defaults keep tests
# deterministic (CPU: ~2 ms at ~30 GFLOP/s; CUDA: ~2 ms of launches at ~300 TFLOP/s).
DEFAULT_GROUP_OVERHEAD_FLOPS = {"cpu": 6e7, "cuda": 6e11}
# On CUDA, rows per forward at most, so that the host builds the next chunk's features (and
# copies them on a side stream) while the device computes this one.
CUDA_CHUNK_ROWS = 64


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def history_flops(config: LLaTTEConfig, n: int) -> int:
    """Sequence FLOPs of one user encoded at history length n (no padding beyond n)."""
    n = max(1, min(n, config.max_seq_len))
    pyramid = [min(p, n) for p in config.pyramid]
    return sequence_flops(dataclasses.replace(config, max_seq_len=n, pyramid=pyramid)).total


def length_groups(
    lengths: Sequence[int],
    cost: Callable[[int], float] | None = None,
    overhead: float = 0.0,
) -> list[list[int]]:
    """Row indices partitioned into length groups, longest first, at the least estimated cost.

    A group runs as one forward padded to its longest history, so it costs
    ``overhead + rows * cost(longest)``. With users sorted by length the best groups are
    contiguous runs, found exactly by dynamic programming over the cut points (O(B^2)).
    The default ``cost`` is quadratic in length (attention) plus linear (projections, FFN).

    Args:
        lengths: valid history length of each row (0 = no history).
        cost: cost of one row padded to a length, in the unit of ``overhead``.
        overhead: fixed cost of one forward.
    Returns:
        groups of row indices covering every row once, longest group first.
    """
    if not lengths:
        return []
    cost = cost or (lambda n: n + n * n / 1000)
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # longest first
    longest = [max(1, lengths[i]) for i in order]
    row_cost = {n: cost(n) for n in set(longest)}
    B = len(order)
    best = [0.0] + [float("inf")] * B  # best[j]: least cost of the first j rows
    cut = [0] * (B + 1)
    for j in range(1, B + 1):
        for i in range(j):  # the last group is order[i:j], padded to longest[i]
            c = best[i] + overhead + (j - i) * row_cost[longest[i]]
            if c < best[j]:
                best[j], cut[j] = c, i
    groups, j = [], B
    while j > 0:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]


def _probe_record(i: int) -> HistoryRecord:
    """A synthetic event for calibration (its values do not matter, only the shapes)."""
    return HistoryRecord(
        timestamp_ms=1_700_000_000_000 + 60_000 * i,
        action_type=ActionType.CLICK,
        item_hash=i,
        surface_hash=0,
        event_hash=i,
    )


@dataclass(frozen=True)
class EncodedUser:
    user_id: str
    record: EmbeddingRecord


class UserEncoder:
    """The upstream model on one device, turning B histories into B embedding records.

    On CUDA the host side is overlapped with the device: features are built into pinned
    memory and copied on a side stream (``non_blocking``) while the previous chunk computes,
    and the vectors come back to the host once per call. The CPU path is the reference.

    Args:
        model: an UpstreamModel in eval mode on ``device``.
        config: its config (``max_seq_len`` bounds T).
        model_version: stored in every record.
        history_length: T events read per user; defaults to ``config.max_seq_len``.
        dtype: the stored vector's dtype.
        autocast_dtype: e.g. torch.bfloat16 on a GPU; None = float32.
        group_overhead_flops: fixed cost of one forward in FLOPs (see ``length_groups``);
            None = the device's default, ``calibrate()`` measures it.
    """

    def __init__(
        self,
        model: UpstreamModel,
        config: LLaTTEConfig,
        model_version: str,
        history_length: int | None = None,
        dtype: EmbeddingDType = EmbeddingDType.FLOAT16,
        autocast_dtype: torch.dtype | None = None,
        group_overhead_flops: float | None = None,
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
        self.cuda = self.device.type == "cuda"
        self.group_overhead_flops = (
            group_overhead_flops
            if group_overhead_flops is not None
            else DEFAULT_GROUP_OVERHEAD_FLOPS["cuda" if self.cuda else "cpu"]
        )
        self._copy_stream = torch.cuda.Stream(self.device) if self.cuda else None
        self._row_flops: dict[int, int] = {}

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str = "auto",
        autocast: str = "auto",
        history_length: int | None = None,
        dtype: EmbeddingDType = EmbeddingDType.FLOAT16,
    ) -> UserEncoder:
        from shared_model.checkpoint import load_checkpoint  # safetensors only when loading

        dev = resolve_device(device)
        ckpt = load_checkpoint(path, stage="upstream", device=dev)
        log.info("loaded %s from %s on %s", ckpt.model_version, path, dev)
        autocast_dtype = resolve_autocast(autocast, dev)
        encoder = cls(
            cast_weights_for_autocast(ckpt.model, autocast_dtype),  # once, not per batch
            ckpt.config,
            ckpt.model_version,
            history_length,
            dtype,
            autocast_dtype,
        )
        encoder.calibrate()
        return encoder

    @property
    def dim(self) -> int:
        return self.config.d_summary

    def row_flops(self, length: int) -> int:
        """FLOPs of one row padded to ``length`` events (cached per length)."""
        if (flops := self._row_flops.get(length)) is None:
            flops = self._row_flops[length] = history_flops(self.config, length)
        return flops

    def calibrate(self, seconds: float = 0.1) -> float:
        """Measure the fixed cost of a forward (one 1-event user) against the time of a
        longer one, in FLOPs; sets and returns ``group_overhead_flops``."""
        T = self.history_length if self.cuda else min(self.history_length, 128)
        rows = 32 if self.cuda else 4
        short = [[_probe_record(0)]]
        full = [[_probe_record(i) for i in range(T)]] * rows

        def timed(histories) -> float:
            """The fastest of a few calls: preemption by other processes only adds time."""
            users = [f"calibrate-{i}" for i in range(len(histories))]
            self.embed(users, histories)  # warm-up
            fastest, calls, began = float("inf"), 0, time.perf_counter()
            while calls < 3 or time.perf_counter() - began < seconds:
                start = time.perf_counter()
                self.embed(users, histories)
                fastest = min(fastest, time.perf_counter() - start)
                calls += 1
            return fastest

        fixed_s, full_s = timed(short), timed(full)
        rate = rows * self.row_flops(T) / max(full_s - fixed_s, 1e-9)
        self.group_overhead_flops = max(0.0, fixed_s * rate - self.row_flops(1))
        log.info(
            "encoder calibrated: %.1f ms per forward, %.1f GFLOP/s, overhead %.2g FLOPs",
            1000 * fixed_s,
            rate / 1e9,
            self.group_overhead_flops,
        )
        return self.group_overhead_flops

    def context(self, user_ids: Sequence[str], histories: Sequence[list[HistoryRecord]]) -> Context:
        newest = [h[-1] if h else None for h in histories]
        B = len(user_ids)
        return Context(
            request_time_ms=torch.tensor([r.timestamp_ms if r else 0 for r in newest]),  # (B,)
            user_hash=torch.tensor([stable_hash(u) for u in user_ids]),  # (B,)
            surface_hash=torch.tensor([r.surface_hash if r else 0 for r in newest]),  # (B,)
            device_hash=torch.full((B,), stable_hash(UPSTREAM_DEVICE)),  # (B,)
        )

    def plan(
        self, lengths: Sequence[int], length_aware: bool = True
    ) -> list[tuple[list[int], int]]:
        """(rows, padded length) per forward. Length-aware: the least-cost length groups, each
        cut to its longest history; else one group padded to T. On CUDA groups are split into
        chunks of at most ``CUDA_CHUNK_ROWS`` rows, to overlap host work with device work."""
        if not lengths:
            return []
        if length_aware:
            groups = length_groups(lengths, self.row_flops, self.group_overhead_flops)
        else:
            groups = [list(range(len(lengths)))]
        limit = CUDA_CHUNK_ROWS if self.cuda else len(lengths)
        return [
            (chunk, self.history_length if not length_aware else max(1, lengths[group[0]]))
            for group in groups
            for chunk in (group[k : k + limit] for k in range(0, len(group), limit))
        ]

    def embed(
        self,
        user_ids: Sequence[str],
        histories: Sequence[list[HistoryRecord]],
        length_aware: bool = True,
    ) -> torch.Tensor:
        """B histories (oldest first) -> (B, U) float32 on the CPU.

        ``length_aware`` runs least-cost length groups, each cut to its longest valid
        history; ``False`` is the reference that pads every user to T.
        """
        histories = [list(h)[-self.history_length :] for h in histories]
        plan = self.plan([len(h) for h in histories], length_aware)
        out = torch.empty(len(histories), self.dim, device=self.device)  # (B, U)
        staged = []  # host buffers and device copies live until the final sync
        for rows, length in plan:
            group = [histories[i] for i in rows]
            events = EventBatch.from_records(group, length, self.config.content_dim)  # (G, L)
            ctx = self.context([user_ids[i] for i in rows], group)
            if self.cuda:
                events, ctx = self._to_device(events, ctx, staged)
            emb = encode_user(self.model, events, ctx, autocast_dtype=self.autocast_dtype)
            out[torch.tensor(rows, device=self.device)] = emb  # (G, U)
        return out.cpu()

    def _to_device(self, events: EventBatch, ctx: Context, staged: list) -> tuple:
        """Pinned host tensors -> device, copied on the side stream; the compute stream waits
        for the copy (not for the host), so the copy overlaps the previous chunk's compute."""
        compute = torch.cuda.current_stream(self.device)
        moved = []
        with torch.cuda.stream(self._copy_stream):
            for obj in (events, ctx):
                fields = {}
                for f in dataclasses.fields(obj):
                    value = getattr(obj, f.name)
                    if isinstance(value, torch.Tensor):
                        host = value.pin_memory()
                        value = host.to(self.device, non_blocking=True)
                        value.record_stream(compute)  # the allocator must not reuse it early
                        staged.append(host)
                    fields[f.name] = value
                moved.append(dataclasses.replace(obj, **fields))
        compute.wait_stream(self._copy_stream)
        return moved[0], moved[1]

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
