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


def _widths(cfg: LLaTTEConfig) -> tuple[int, int]:
    """Widths of the context and candidate feature vectors (see query_tokens.py)."""
    de = cfg.d_embed
    ctx = 3 * de + 2 * len(HARMONICS)
    cand = 2 * de + (de + 1 if cfg.content_dim else 0) + cfg.n_candidate_floats
    return ctx, cand


def sequence_flops(cfg: LLaTTEConfig) -> FlopsBreakdown:
    """Sequence-module FLOPs of one full forward (one history, one query-token set)."""
    T, Q, D, H, K = cfg.max_seq_len, cfg.n_query, cfg.d_model, cfg.n_heads, cfg.head_dim
    de = cfg.d_embed
    tok_in = de * (5 if cfg.content_dim else 4) + 1
    tokenizer = (
        _linear(T, tok_in, D)
        + _linear(T, D, D)
        + (_linear(T, cfg.content_dim, de) if cfg.content_dim else 0)
        + _linear(T, NUM_PERIODIC_FEATURES, cfg.time_enc_dims) * (cfg.time_enc_dims > 0)
    )
    ctx_w, cand_w = _widths(cfg)
    Qc, Qa = cfg.n_context_tokens, cfg.n_candidate_tokens
    query = _linear(1, ctx_w, Qc * D)
    if Qa:
        query += _linear(1, ctx_w + cand_w, Qa * D)
        query += _linear(1, cfg.content_dim, de) if cfg.content_dim else 0
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


def dhen_flops(cfg: LLaTTEConfig) -> tuple[int, int]:
    """Non-sequence FLOPs: (once per request, per scored candidate).

    The user-side input groups (context, upstream embedding) are projected once per request;
    the candidate-side groups, the DHEN layers and the heads run per candidate.
    """
    ctx_w, cand_w = _widths(cfg)
    W = cfg.d_ns
    user_w = ctx_w + (0 if cfg.is_upstream else cfg.d_upstream + 1)
    per_layer = ("cross" in cfg.dhen_modules) * _linear(1, W, W) + ("mlp" in cfg.dhen_modules) * (
        _linear(1, W, 2 * W) + _linear(1, 2 * W, W)
    )
    heads = cfg.n_tasks * (_linear(1, W, cfg.head_hidden) + _linear(1, cfg.head_hidden, 1))
    content = _linear(1, cfg.content_dim, cfg.d_embed) if cfg.content_dim else 0
    per_candidate = _linear(1, cand_w + cfg.d_summary, W) + cfg.n_ns_layers * per_layer
    return _linear(1, user_w, W), per_candidate + heads + content


def scoring_flops(cfg: LLaTTEConfig, n_candidates: int, shared: bool) -> int:
    """FLOPs to score one user's N candidates with the online model.

    naive: N full forwards. shared: the prefix (events and context query tokens) once in the
    naive MLA form, then per candidate only the candidate query tokens, in the absorbed form,
    against the cached latents (see modules/sequence.py).
    """
    N = n_candidates
    full = sequence_flops(cfg)
    dhen_once, dhen_each = dhen_flops(cfg)
    if not shared:
        return N * (full.total + dhen_once + dhen_each)
    D, H, C, R, K = cfg.d_model, cfg.n_heads, cfg.kv_lora_rank, cfg.q_lora_rank, cfg.head_dim
    Qc, Qa = cfg.n_context_tokens, cfg.n_candidate_tokens
    ctx_w = _widths(cfg)[0]
    prefix = full.tokenizer + _linear(1, ctx_w, Qc * D) + dhen_once
    per_candidate = full.query_tokens - _linear(1, ctx_w, Qc * D) + full.readout + dhen_each
    for kept, kv_events in zip(cfg.pyramid, cfg.layer_kv_lengths, strict=True):
        L, S = kv_events + Qc, kept + Qc  # prefix rows
        prefix += _linear(L, D, C) + _linear(L, C, 2 * H * K) + _linear(S, D, R)
        prefix += _linear(S, R, H * K) + 2 * (2 * S * L * H * K) + _linear(S, H * K, D)
        prefix += 3 * _linear(S, D, cfg.d_ffn)
        per_candidate += _linear(Qa, D, C) + _linear(Qa, D, R) + _linear(Qa, R, H * C)
        per_candidate += 2 * (2 * Qa * (L + Qa) * H * C) + _linear(Qa, H * C, D)
        per_candidate += 3 * _linear(Qa, D, cfg.d_ffn)
    return prefix + N * per_candidate


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
