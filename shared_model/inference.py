"""Inference entry points used by the services: ``encode_user`` (upstream) and ``score`` (online).

Both run under ``torch.inference_mode`` and take an optional autocast dtype (bfloat16 on a GPU;
on a CPU without bf16 matmul units it is slower than float32, so the upstream worker's default,
``auto``, takes it only on a GPU or a CPU with native bf16 matmul; the ranker's is float32).
Outputs are float32. The services cast a bf16 model's Linear weights once at load
(``cast_weights_for_autocast``) rather than letting autocast cast them on every call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from shared_model.features import Candidates, Context, EventBatch, UpstreamFeature
from shared_model.modules.mla import AttnImpl
from shared_model.ranker import RankerModel
from shared_model.upstream import UpstreamModel


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AVX512-BF16 or AMX-BF16).

    Without it (e.g. AVX2-only parts) oneDNN emulates bf16 and a bf16 matmul is several times
    slower than fp32; with it, about twice as fast. ``cpuinfo``: the text of /proc/cpuinfo
    (read when None; False where it cannot be read).
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as f:
                cpuinfo = f.read()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    return False


def resolve_autocast(mode: str, device: torch.device) -> torch.dtype | None:
    """A service's ``autocast`` setting -> the autocast dtype (None: float32).

    ``bf16``: always; ``none``: never; ``auto``: on a GPU, and on a CPU with native bf16
    matmul (``cpu_has_native_bf16``), where it is the faster of the two.
    """
    if mode not in ("auto", "bf16", "none"):
        raise ValueError(f"autocast must be auto, bf16 or none, not {mode!r}")
    if mode == "bf16":
        return torch.bfloat16
    if mode == "auto" and (device.type == "cuda" or cpu_has_native_bf16()):
        return torch.bfloat16
    return None


def cast_weights_for_autocast(model: torch.nn.Module, dtype: torch.dtype | None) -> torch.nn.Module:
    """Cast every ``nn.Linear``'s weight and bias to ``dtype`` in place, once; returns ``model``.

    Under autocast each Linear casts its float32 weight to the autocast dtype on every call:
    for the online config that is 3.9M parameters (16 MB) read and rewritten per request,
    about a fifth of a bf16 step on a CPU with AMX (docs/benchmarks/ranker-xeon-amx.md as of
    commit 034879a).
    Cast once at load, those casts become no-ops and the results are those of autocast up to
    the absorbed attention's folded weights, which are then folded from the cast weights
    (parity: tests/shared_model/test_precision.py). The model must then always run under
    autocast to ``dtype`` (``score``/``encode_user`` with ``autocast_dtype=dtype``).
    ``None`` or float32 leaves the model untouched.
    """
    if dtype is None or dtype == torch.float32:
        return model
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.weight.data = module.weight.data.to(dtype)
            if module.bias is not None:
                module.bias.data = module.bias.data.to(dtype)
    return model


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype`` on ``device``; no context for None or float32."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def encode_user(
    model: UpstreamModel,
    events: EventBatch,
    ctx: Context,
    autocast_dtype: torch.dtype | None = None,
    impl: AttnImpl = "sdpa",
) -> torch.Tensor:
    """B users' histories -> (B, d_summary) float32 transfer embeddings."""
    device = _device(model)
    with autocast_context(device, autocast_dtype):
        emb = model.embed(events.to(device), ctx.to(device), impl)
    return emb.float()


@torch.inference_mode()
def score(
    model: RankerModel,
    events: EventBatch,
    ctx: Context,
    cands: Candidates,
    upstream: UpstreamFeature,
    shared: bool = True,
    impl: AttnImpl | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """One user, N candidates -> probabilities (N, 2): [pCTR, pCVR].

    ``shared=True`` encodes the history once and runs only the candidates' query tokens
    against the cached latents (absorbed MLA); ``shared=False`` is the naive reference that
    runs N full forwards.
    """
    device = _device(model)
    args = (events.to(device), ctx.to(device), cands.to(device), upstream.to(device))
    with autocast_context(device, autocast_dtype):
        if shared:
            logits = model.score_shared(*args, impl=impl or "absorbed")
        else:
            logits = model.score_naive(*args, impl=impl or "sdpa")
    return torch.sigmoid(logits.float())


@torch.inference_mode()
def score_many(
    model: RankerModel,
    requests: Sequence[tuple[EventBatch, Context, Candidates, UpstreamFeature]],
    impl: AttnImpl | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> list[torch.Tensor]:
    """Several requests scored together -> each request's probabilities (N_i, 2).

    ``requests`` holds one (events, ctx, cands, upstream) tuple per request, each for one user
    (batch 1), as ``score`` takes them. The users' prefixes run in one batch and their
    candidates in another, each candidate reading only its own user's history; the result for
    each request equals ``score(...)`` on it alone (up to float summation order).
    """
    device = _device(model)
    moved = [
        (ev.to(device), ctx.to(device), cands.to(device), up.to(device))
        for ev, ctx, cands, up in requests
    ]
    with autocast_context(device, autocast_dtype):
        logits = model.score_many(moved, impl=impl or "absorbed")
    return [torch.sigmoid(x.float()) for x in logits]
