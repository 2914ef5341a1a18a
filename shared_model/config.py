"""Model configuration: one dataclass, loaded from JSON, passed whole to every module.

The same config describes a checkpoint, so the upstream worker, the ranker and the trainer can
never silently disagree about shapes. Derived sizes are properties.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

Stage = Literal["upstream", "online"]


@dataclass
class LLaTTEConfig:
    # --- stage --------------------------------------------------------------------------------
    stage: Stage = "online"  # upstream: user-only queries -> transfer embedding; online: ranker
    # --- action tokens (paper A.2.1) ----------------------------------------------------------
    max_seq_len: int = 400  # T: most recent events read per user
    item_buckets: int = 200_003  # hashed item/ad id embedding rows
    surface_buckets: int = 64  # hashed surface embedding rows
    num_action_types: int = 8  # action type vocabulary (contract.ActionType fits)
    age_buckets: int = 32  # log2-minute buckets of (request time - event time)
    content_dim: int = 32  # width of the optional dense content embedding (0 disables it)
    d_embed: int = 32  # width of each sparse embedding before the token MLP
    time_enc_dims: int = 32  # hidden dims that receive the additive timestamp encoding
    # --- query tokens (A.2.2) -----------------------------------------------------------------
    n_query: int = 4  # n_q query tokens appended after the events
    # online only: how many of the n_q tokens carry only user/request context. They come
    # before the candidate tokens, so (attention being causal) they are shared by all
    # candidates and computed once per request; the rest carry the candidate.
    n_context_query: int = 2
    user_buckets: int = 100_003  # hashed user id rows (query tokens and DHEN)
    ad_buckets: int = 200_003  # hashed candidate ad id rows
    advertiser_buckets: int = 20_011  # hashed advertiser id rows
    device_buckets: int = 16  # hashed device type rows
    n_candidate_floats: int = 4  # float features per candidate
    # --- transformer (A.2.3, A.3) -------------------------------------------------------------
    d_model: int = 256  # D
    n_layers: int = 3  # L
    n_heads: int = 4  # H
    head_dim: int = 64  # K, per-head query/key/value width
    q_lora_rank: int = 128  # query latent rank
    kv_lora_rank: int = 128  # C, the shared key/value latent rank
    d_ffn: int = 512  # SwiGLU hidden width
    # events kept (as query rows) by each layer, most recent first; 0 = cross-attention layer
    # (only the query tokens remain). None = full self-attention then a final cross layer.
    pyramid: list[int] | None = None
    # --- readout (A.2.4) ----------------------------------------------------------------------
    d_summary: int = 256  # width of the sequence summary (2048 for the upstream transfer)
    readout_rank: int = 64  # rank of the low-rank readout MLP
    readout_hidden: int = 512
    # --- DHEN non-sequence module (A.1) -------------------------------------------------------
    d_upstream: int = 2048  # width of the cached upstream embedding (online stage only)
    d_ns: int = 256  # DHEN width
    n_ns_layers: int = 2  # L_NS
    dhen_modules: list[str] = field(default_factory=lambda: ["cross", "mlp"])
    # --- heads --------------------------------------------------------------------------------
    head_hidden: int = 128
    task_weights: list[float] = field(default_factory=lambda: [1.0, 1.0])  # pCTR, pCVR
    init_std: float = 0.02  # std of the embedding tables' init (linears: 1/sqrt(fan_in))

    def __post_init__(self) -> None:
        if self.stage not in ("upstream", "online"):
            raise ValueError(f"stage must be 'upstream' or 'online', got {self.stage!r}")
        if self.pyramid is None:
            self.pyramid = [self.max_seq_len] * (self.n_layers - 1) + [0]
        self.pyramid = [int(x) for x in self.pyramid]
        if len(self.pyramid) != self.n_layers:
            raise ValueError(f"pyramid has {len(self.pyramid)} entries for {self.n_layers} layers")
        prev = self.max_seq_len
        for i, kept in enumerate(self.pyramid):
            if not 0 <= kept <= prev:
                raise ValueError(
                    f"pyramid[{i}]={kept} must be in [0, {prev}] (kept lengths never grow)"
                )
            prev = kept
        for name in ("d_model", "n_layers", "n_heads", "head_dim", "n_query", "max_seq_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if not self.is_upstream and not 0 <= self.n_context_query < self.n_query:
            raise ValueError(
                f"n_context_query={self.n_context_query} must be in [0, n_query): the online "
                "model needs at least one candidate query token"
            )
        if self.time_enc_dims > self.d_model:
            raise ValueError("time_enc_dims cannot exceed d_model")
        unknown = set(self.dhen_modules) - {"cross", "mlp"}
        if unknown or not self.dhen_modules:
            raise ValueError("dhen_modules must be a non-empty subset of {cross, mlp}")
        if len(self.task_weights) != 2:
            raise ValueError("task_weights needs one weight per head (pCTR, pCVR)")

    # --- derived sizes ------------------------------------------------------------------------
    @property
    def is_upstream(self) -> bool:
        return self.stage == "upstream"

    @property
    def n_context_tokens(self) -> int:
        """Query tokens that never see the candidate (all of them upstream)."""
        return self.n_query if self.is_upstream else self.n_context_query

    @property
    def n_candidate_tokens(self) -> int:
        return self.n_query - self.n_context_tokens

    @property
    def n_tasks(self) -> int:
        return len(self.task_weights)

    @property
    def layer_kv_lengths(self) -> list[int]:
        """Events each layer reads as keys/values (the previous layer's kept events)."""
        return [self.max_seq_len, *self.pyramid[:-1]]

    # --- JSON ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LLaTTEConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
        return cls(**d)

    @classmethod
    def from_json(cls, path_or_text: str | Path) -> LLaTTEConfig:
        text = str(path_or_text)
        if not text.lstrip().startswith("{"):
            text = Path(path_or_text).read_text()
        return cls.from_dict(json.loads(text))


def upstream_config(**overrides: Any) -> LLaTTEConfig:
    """The deep upstream encoder: long history, full self-attention, final cross layer."""
    base = dict(
        stage="upstream",
        max_seq_len=1000,
        d_model=512,
        n_layers=6,
        n_heads=8,
        head_dim=64,
        q_lora_rank=256,
        kv_lora_rank=256,
        d_ffn=1408,
        n_query=8,
        pyramid=[1000, 1000, 1000, 1000, 1000, 0],
        d_summary=2048,
        readout_rank=256,
        readout_hidden=1024,
    )
    base.update(overrides)
    return LLaTTEConfig(**base)


def online_config(**overrides: Any) -> LLaTTEConfig:
    """The compact online ranker: short history, aggressive pyramid ending in cross-attention."""
    base = dict(
        stage="online",
        max_seq_len=400,
        d_model=256,
        n_layers=3,
        n_heads=4,
        head_dim=64,
        q_lora_rank=128,
        kv_lora_rank=64,
        d_ffn=704,
        n_query=4,
        n_context_query=2,
        pyramid=[64, 16, 0],
        d_summary=256,
    )
    base.update(overrides)
    return LLaTTEConfig(**base)


def tiny_config(stage: Stage = "online", **overrides: Any) -> LLaTTEConfig:
    """A seconds-fast config for tests."""
    base = dict(
        stage=stage,
        max_seq_len=16,
        item_buckets=101,
        surface_buckets=7,
        age_buckets=8,
        content_dim=6,
        d_embed=8,
        time_enc_dims=8,
        n_query=3,
        n_context_query=1,
        user_buckets=53,
        ad_buckets=101,
        advertiser_buckets=17,
        device_buckets=5,
        n_candidate_floats=2,
        d_model=32,
        n_layers=3,
        n_heads=2,
        head_dim=8,
        q_lora_rank=12,
        kv_lora_rank=10,
        d_ffn=48,
        pyramid=[16, 6, 0] if stage == "online" else [16, 16, 0],
        d_summary=24 if stage == "online" else 40,
        readout_rank=8,
        readout_hidden=32,
        d_upstream=40,
        d_ns=32,
        n_ns_layers=2,
        head_hidden=16,
    )
    base.update(overrides)
    return LLaTTEConfig(**base)
