"""Sequence-module FLOPs per sample, honouring the pyramid.

A multiply-add is 2 FLOPs. Attention is counted as executed: dense S x L scores and
weighted sums (masked entries are computed and discarded). Counted, in the naive MLA form:

* tokenizer MLP over T events, query-token projection, readout;
* per layer with L input rows (keys/values) and S kept rows (queries): KV down-projection on
  L rows, KV up-projection to per-head K and V on L rows, Q down/up on S rows, QK^T and PV
  (S x L x H x K each), W_out on S rows, SwiGLU FFN on S rows.

Embedding lookups, norms, softmax and activations are not counted (they are not matmuls).

``python -m shared_model.flops`` prints the default upstream and online configs and the ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared_model.config import LLaTTEConfig, online_config, upstream_config
from shared_model.modules.query_tokens import CandidateEmbedding, ContextEmbedding
from shared_model.modules.time_encoding import HARMONICS, NUM_PERIODIC_FEATURES


@dataclass
class FlopsBreakdown:
    tokenizer: int
    query_tokens: int
    attention: int  # MLA projections + scores + weighted sums
    ffn: int
    readout: int

    @property
    def total(self) -> int:
        return self.tokenizer + self.query_tokens + self.attention + self.ffn + self.readout


def _linear(rows: int, d_in: int, d_out: int) -> int:
    return 2 * rows * d_in * d_out


def sequence_flops(cfg: LLaTTEConfig) -> FlopsBreakdown:
    T, Q, D, H, K = cfg.max_seq_len, cfg.n_query, cfg.d_model, cfg.n_heads, cfg.head_dim
    de = cfg.d_embed
    tok_in = de * (5 if cfg.content_dim else 4) + 1
    tokenizer = (
        _linear(T, tok_in, D)
        + _linear(T, D, D)
        + (_linear(T, cfg.content_dim, de) if cfg.content_dim else 0)
        + _linear(T, NUM_PERIODIC_FEATURES, cfg.time_enc_dims) * (cfg.time_enc_dims > 0)
    )
    width = (
        3 * de
        + 2 * len(HARMONICS)
        + (
            0
            if cfg.is_upstream
            else 2 * de + (de + 1 if cfg.content_dim else 0) + cfg.n_candidate_floats
        )
    )
    query = _linear(1, width, Q * D) + (
        0 if cfg.is_upstream or not cfg.content_dim else _linear(1, cfg.content_dim, de)
    )
    attention = ffn = 0
    for kept, kv_events in zip(cfg.pyramid, cfg.layer_kv_lengths, strict=True):
        L, S = kv_events + Q, kept + Q
        attention += _linear(L, D, cfg.kv_lora_rank) + _linear(L, cfg.kv_lora_rank, 2 * H * K)
        attention += _linear(S, D, cfg.q_lora_rank) + _linear(S, cfg.q_lora_rank, H * K)
        attention += 2 * (2 * S * L * H * K)  # QK^T and PV
        attention += _linear(S, H * K, D)
        ffn += 3 * _linear(S, D, cfg.d_ffn)
    r, h = cfg.readout_rank, cfg.readout_hidden
    readout = (
        _linear(1, Q * D, r) + _linear(1, r, h) + _linear(1, h, r) + _linear(1, r, cfg.d_summary)
    )
    return FlopsBreakdown(tokenizer, query, attention, ffn, readout)


def _check_widths() -> None:
    # Guard the hard-coded feature widths above against drift in the modules.
    cfg = online_config()
    assert ContextEmbedding(cfg).width == 3 * cfg.d_embed + 2 * len(HARMONICS)
    assert CandidateEmbedding(cfg).width == 3 * cfg.d_embed + 1 + cfg.n_candidate_floats


def main() -> None:
    _check_widths()
    up, on = sequence_flops(upstream_config()), sequence_flops(online_config())
    rows = [("upstream", upstream_config(), up), ("online", online_config(), on)]
    print(
        f"{'config':<10}{'L':>3}{'d':>5}{'T':>6}  {'pyramid':<28}{'GFLOPs/sample':>14}"
        f"{'attn %':>8}{'ffn %':>7}"
    )
    for name, cfg, fl in rows:
        print(
            f"{name:<10}{cfg.n_layers:>3}{cfg.d_model:>5}{cfg.max_seq_len:>6}  "
            f"{cfg.pyramid!s:<28}{fl.total / 1e9:>14.3f}"
            f"{100 * fl.attention / fl.total:>8.1f}{100 * fl.ffn / fl.total:>7.1f}"
        )
    print(f"upstream / online sequence FLOPs ratio: {up.total / on.total:.1f}x (paper: > 45x)")


if __name__ == "__main__":
    main()
