"""Multi-head Latent Attention (paper A.3; DeepSeek-V2/V3 MLA without the RoPE part).

Shape legend: B batch, S query rows, L key rows, H heads, K head dim, R query latent rank,
C key/value latent rank, D model width.

Three interchangeable implementations of the same function:

* ``naive``    - up-project the latents to per-head K and V, then softmax(QK^T/sqrt(K)) V W_o
                 (eq. 14-16), in plain einsum. The reference.
* ``sdpa``     - the naive form through ``F.scaled_dot_product_attention`` (fused kernels);
                 the fast path for training and for long self-attention.
* ``absorbed`` - MQA in the latent space (eq. 17-19): W_up^Q is folded with the key half of
                 W_up^KV into W^QK (H, R, C), and the value half of W_up^KV with W_out into
                 W^VO (H, C, D). Keys and values are the shared C-wide latent, so a cached
                 latent is read once for all heads and all candidates. On the CPU, in float32
                 and without autograd, a first segment with no mask (the candidates reading
                 their user's unpadded prefix) goes through PyTorch's fused flash-attention
                 kernel, and the other segments are merged with it by log-sum-exp
                 (``fuse_first_segment = False`` keeps the materialised reference).

The scale stays 1/sqrt(K) in every form, so the three are exactly the same function (eq. 19
writes sqrt(d_c); that is a different, equally trainable, parameterisation).

Attention is over one or more key *segments*. Each segment is a latent (G, L_i, C) with an
allowed-mask broadcastable to (G, S, L_i) (or per row, (B, S, L_i)). G is 1 (one key set shared
by all B rows, read without being copied: N candidates attending to one encoded history), B (every
row its own keys), or a divisor of B: G users' prefixes, row b reading user b // (B // G) (see
``grouping.py``), which is how several requests' candidates run in one batch.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from shared_model.config import LLaTTEConfig
from shared_model.modules.grouping import per_row

AttnImpl = Literal["naive", "sdpa", "absorbed"]
# (latent (G, L, C), allowed (G|B|1, S|1, L) bool, or None when every key is allowed)
Segment = tuple[torch.Tensor, torch.Tensor | None]
# PyTorch's CPU flash-attention kernel, with its log-sum-exp (None in a torch without it)
_FLASH_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


class MultiHeadLatentAttention(nn.Module):
    # Linear layers whose weights the absorbed form folds (read directly, not called)
    direct_weights = ("wq_b", "wkv_b", "wo")

    def __init__(self, cfg: LLaTTEConfig) -> None:
        super().__init__()
        D, H, K = cfg.d_model, cfg.n_heads, cfg.head_dim
        self.n_heads, self.head_dim = H, K
        self.wq_a = nn.Linear(D, cfg.q_lora_rank, bias=False)
        self.q_norm = nn.RMSNorm(cfg.q_lora_rank)
        self.wq_b = nn.Linear(cfg.q_lora_rank, H * K, bias=False)
        self.wkv_a = nn.Linear(D, cfg.kv_lora_rank, bias=False)
        self.kv_norm = nn.RMSNorm(cfg.kv_lora_rank)
        self.wkv_b = nn.Linear(cfg.kv_lora_rank, H * 2 * K, bias=False)
        self.wo = nn.Linear(H * K, D, bias=False)
        self.scale = K**-0.5
        # The absorbed form's fused read of an unmasked first segment (see _fusable); False
        # keeps it materialised, the reference (a benchmark's baseline).
        self.fuse_first_segment = True
        self._folded: tuple[tuple, torch.Tensor, torch.Tensor] | None = None

    # --- latents --------------------------------------------------------------------------
    def q_latent(self, x: torch.Tensor) -> torch.Tensor:
        return self.q_norm(self.wq_a(x))  # (B, S, D) -> (B, S, R)

    def kv_latent(self, x: torch.Tensor) -> torch.Tensor:
        return self.kv_norm(self.wkv_a(x))  # (B, L, D) -> (B, L, C)

    # --- weights --------------------------------------------------------------------------
    def _up_kv(self) -> tuple[torch.Tensor, torch.Tensor]:
        H, K = self.n_heads, self.head_dim
        w = self.wkv_b.weight.view(H, 2 * K, -1)  # (H, 2K, C)
        return w[:, :K], w[:, K:]  # W_k (H, K, C), W_v (H, K, C)

    def _fold(self) -> tuple[torch.Tensor, torch.Tensor]:
        H, K = self.n_heads, self.head_dim
        w_q = self.wq_b.weight.view(H, K, -1)  # (H, K, R)
        w_k, w_v = self._up_kv()
        w_qk = torch.einsum("hkr,hkc->rhc", w_q, w_k) * self.scale  # (R, H, C), scale folded in
        w_o = self.wo.weight.view(-1, H, K)  # (D, H, K)
        w_vo = torch.einsum("hkc,dhk->hcd", w_v, w_o)  # (H, C, D)
        return w_qk.reshape(w_qk.shape[0], -1), w_vo.reshape(-1, w_vo.shape[-1])

    def folded_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """W^QK * 1/sqrt(K) as (R, H*C) and W^VO as (H*C, D): each a plain matrix, so the query
        and output projections are one matmul each.

        Folded in the weights' own dtype with autocast off (an autocast region must not leave a
        bf16 fold behind for a later fp32 call; autocast casts the folded matrix at use), and
        cached until a source weight changes (in place, replaced, or moved to another dtype or
        device). Under autograd they are recomputed every call, so gradients flow.
        """
        sources = (self.wq_b.weight, self.wkv_b.weight, self.wo.weight)
        if torch.is_grad_enabled() and any(w.requires_grad for w in sources):
            return self._fold()
        key = tuple((w._version, w.data_ptr(), w.dtype, w.device) for w in sources)
        if self._folded is None or self._folded[0] != key:
            device_type = self.wo.weight.device.type
            with torch.autocast(device_type, enabled=False):
                w_qk, w_vo = self._fold()
            self._folded = (key, w_qk, w_vo)
        return self._folded[1], self._folded[2]

    # --- attention ------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, segments: list[Segment], impl: AttnImpl = "sdpa"):
        """x (B, S, D) query rows; segments of keys/values -> (B, S, D)."""
        q_lat = self.q_latent(x)  # (B, S, R)
        if impl == "absorbed":
            return self._absorbed(q_lat, segments, fuse=self.fuse_first_segment)
        if impl not in ("sdpa", "naive"):
            raise ValueError(f"unknown attention impl {impl!r}")
        B = x.shape[0]
        # The reference forms read grouped segments (1 < G < B) copied out per row.
        segments = [
            (
                lat if lat.shape[0] in (1, B) else per_row(lat, B),
                a if a is None or a.shape[0] in (1, B) else per_row(a, B),
            )
            for lat, a in segments
        ]
        return self._sdpa(q_lat, segments) if impl == "sdpa" else self._naive(q_lat, segments)

    def _naive(self, q_lat: torch.Tensor, segments: list[Segment]) -> torch.Tensor:
        B, S, _ = q_lat.shape
        H, K = self.n_heads, self.head_dim
        q = self.wq_b(q_lat).view(B, S, H, K) * self.scale  # (B, S, H, K)
        scores, values = [], []
        for lat, allowed in segments:
            k, v = self.wkv_b(lat).view(*lat.shape[:2], H, 2 * K).split(K, dim=-1)  # (b, L, H, K)
            if lat.shape[0] == 1 and B > 1:  # shared segment: one key set for every row
                s = torch.einsum("bshk,lhk->bhsl", q, k[0])
            else:
                s = torch.einsum("bshk,blhk->bhsl", q, k)
            if allowed is not None:
                s = s.masked_fill(~allowed[:, None], float("-inf"))
            scores.append(s)
            values.append(v)
        probs = torch.softmax(torch.cat(scores, dim=-1), dim=-1)  # (B, H, S, sum L)
        out = q_lat.new_zeros(B, S, H, K)
        start = 0
        for (lat, _), v in zip(segments, values, strict=True):
            p = probs[..., start : start + lat.shape[1]]
            start += lat.shape[1]
            if lat.shape[0] == 1 and B > 1:
                out = out + torch.einsum("bhsl,lhk->bshk", p, v[0])
            else:
                out = out + torch.einsum("bhsl,blhk->bshk", p, v)
        return self.wo(out.reshape(B, S, H * K))

    def _sdpa(self, q_lat: torch.Tensor, segments: list[Segment]) -> torch.Tensor:
        B, S, _ = q_lat.shape
        H, K = self.n_heads, self.head_dim
        lat = torch.cat([seg.expand(B, -1, -1) for seg, _ in segments], dim=1)  # (B, L, C)
        allowed = torch.cat(
            [
                (a if a is not None else lat.new_ones(1, 1, 1, dtype=torch.bool)).expand(
                    B, S, seg.shape[1]
                )
                for seg, a in segments
            ],
            dim=-1,
        )  # (B, S, L)
        q = self.wq_b(q_lat).view(B, S, H, K).transpose(1, 2)  # (B, H, S, K)
        k, v = self.wkv_b(lat).view(B, -1, H, 2 * K).split(K, dim=-1)  # (B, L, H, K)
        out = F.scaled_dot_product_attention(
            q, k.transpose(1, 2), v.transpose(1, 2), attn_mask=allowed[:, None]
        )  # (B, H, S, K)
        return self.wo(out.transpose(1, 2).reshape(B, S, H * K))

    def _absorbed(
        self, q_lat: torch.Tensor, segments: list[Segment], fuse: bool = False
    ) -> torch.Tensor:
        B, S, _ = q_lat.shape
        H = self.n_heads
        w_qk, w_vo = self.folded_weights()
        C = w_qk.shape[1] // H
        if B == 0:  # no query rows (a request without candidates)
            return q_lat.new_zeros(0, S, w_vo.shape[1])
        q = (q_lat @ w_qk).view(B, S, H, C)  # already scaled by 1/sqrt(K)
        if fuse and len(segments) > 1 and _fusable(q, segments[0]):
            return _merge_fused_first(q, segments).reshape(B, S, H * C) @ w_vo
        # The scores of all segments go side by side into one (B*S*H, sum L) matrix for one
        # fused softmax; each segment's probabilities are then a strided view of it.
        probs = torch.softmax(torch.cat(_scores(q, segments), dim=-1), dim=-1)  # (B*S*H, sum L)
        out_lat, start = None, 0
        for lat, _ in segments:
            G, L = lat.shape[0], lat.shape[1]
            p = probs[:, start : start + L].view(G, (B // G) * S * H, L)  # rows strided by sum L
            start += L
            o = torch.matmul(p, lat).view(B, S, H, C)
            out_lat = o if out_lat is None else out_lat + o  # (B, S, H, C)
        return out_lat.reshape(B, S, H * C) @ w_vo  # (B, S, D)


def _scores(q: torch.Tensor, segments: list[Segment]) -> list[torch.Tensor]:
    """q (B, S, H, C), scaled -> each segment's scores (B*S*H, L_i), -inf where not allowed.

    Each is one (b)mm on the shared latent: a segment of G key sets is read by B = G * M query
    rows as (G, M*S*H, C) @ (G, C, L), whether G is 1 (one history for all candidates), B (own
    keys) or the users of a multi-request batch.
    """
    B, S, H, C = q.shape
    scores = []
    for lat, allowed in segments:
        G, L = lat.shape[0], lat.shape[1]
        M = B // G
        s = torch.matmul(q.reshape(G, M * S * H, C), lat.transpose(1, 2))  # (G, M*S*H, L)
        if allowed is not None:
            A = allowed.shape[0]  # 1, G or B rows of masks
            mask = allowed.view(G if A == B else A, M if A == B else 1, allowed.shape[1], 1, L)
            s = s.view(G, M, S, H, L).masked_fill_(~mask, float("-inf"))
        scores.append(s.reshape(B * S * H, L))
    return scores


def _fusable(q: torch.Tensor, first: Segment) -> bool:
    """Whether the fused kernel can read the first segment: every key allowed and at least one,
    float32 on the CPU, no gradient wanted (the serving path; training keeps the materialised
    form)."""
    lat, allowed = first
    return (
        _FLASH_CPU is not None
        and allowed is None
        and lat.shape[1] > 0
        and q.device.type == "cpu"
        and q.dtype == lat.dtype == torch.float32
        and not (torch.is_grad_enabled() and (q.requires_grad or lat.requires_grad))
    )


def _merge_fused_first(q: torch.Tensor, segments: list[Segment]) -> torch.Tensor:
    """Absorbed attention with the first segment through the fused kernel -> (B*S*H, C).

    q (B, S, H, C), scaled. The first segment's keys (its latent, read by B = G * M rows as
    one MQA head per user) never leave the kernel's tiles: it returns that segment's output,
    normalised over its keys, and the log-sum-exp of its scores. The other segments' scores
    are materialised (few keys: a candidate's own tokens) and merged with it exactly:
    softmax over all keys = (exp(lse_1) o_1 + sum_i exp(s_i) v_i) / (exp(lse_1) + sum exp(s_i)),
    every exponent taken relative to their common maximum. Equal to the materialised form
    within float rounding (tests/shared_model/test_mla_fused.py).
    """
    B, S, H, C = q.shape
    (first, _), rest = segments[0], segments[1:]
    G = first.shape[0]
    keys = first[:, None]  # (G, 1, L, C): one head, keys and values alike
    out, lse = _FLASH_CPU(q.reshape(G, 1, (B // G) * S * H, C), keys, keys, scale=1.0)
    out, lse = out.reshape(B * S * H, C), lse.reshape(B * S * H, 1)
    scores = _scores(q, rest)
    s = torch.cat(scores, dim=-1) if len(scores) > 1 else scores[0]  # (B*S*H, sum L)
    top = torch.maximum(s.amax(-1, keepdim=True), lse)  # finite: lse is
    weights = (s - top).exp_()  # (B*S*H, sum L), unnormalised
    first_weight = (lse - top).exp_()  # (B*S*H, 1)
    total = first_weight + weights.sum(-1, keepdim=True)
    out = out * first_weight
    start = 0
    for lat, _ in rest:
        G, L = lat.shape[0], lat.shape[1]
        p = weights[:, start : start + L].reshape(G, (B // G) * S * H, L)
        start += L
        out = out + torch.matmul(p, lat).reshape(B * S * H, C)
    return out / total
