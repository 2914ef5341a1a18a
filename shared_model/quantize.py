"""int8 scoring on the CPU: dynamic quantization of the ranker's Linear layers.

On a CPU without native bf16 (AVX2-only parts), bf16 is several times slower than float32,
but int8 is not: FBGEMM's int8 GEMM multiplies with AVX2's 8-bit multiply-adds (VNNI where
the CPU has it). ``quantize_int8`` swaps Linear layers for PyTorch's dynamically quantized
Linear: weights int8 per output channel, computed once here; activations quantized to 8 bits
per call (per tensor, from the batch's own range), products accumulated in int32 and returned
in float32. Attention, norms and embeddings stay float32.

Which: by default those of the sequence module (``within="sequence"``: the tokenizer, the
query tokens' context projection, the MLA down-projections, the FFNs, the readout), where
most of the online step's FLOPs are; the DHEN and the heads stay float32. On two trained
rankers, quantizing the DHEN and the heads too moved test NE by +2.5e-4 and +9.8e-4, against
-0.5e-4 and +3.0e-4 for the sequence module alone (docs/experiments, "Serving precision"),
for a step only 1.03-1.10x faster (docs/benchmarks/scoring-xeon-amx.md, scoring-zen4.md and
their AVX2-capped twins).

Within that, eligible: a Linear whose owner only calls it. Modules that read a child Linear's
weight directly (the absorbed MLA folds ``wq_b``, ``wkv_b`` and ``wo`` into its attention; the
query tokens and the DHEN input split their projection into column blocks) name those
children in a ``direct_weights`` tuple, and they stay float32. So does a Linear with one
output (a head's last layer): quantizing it saves nothing and costs precision at the logit.

What it changes, and why it is opt-in (the float32 model stays the reference):

- scores move by the quantization error (tests/shared_model/test_quantize.py bounds it on a
  seeded model; docs/experiments "Serving precision" measures the change in test NE);
- the activation scale is per call, so a request's scores depend slightly on which requests
  were micro-batched with it (bounded in the same test).

Built on ``torch.ao.quantization.quantize_dynamic``, which PyTorch marks deprecated in favour
of torchao; it works in the pinned torch, and its deprecation notice is silenced here.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


def int8_linear_names(model: nn.Module, within: str = "sequence") -> list[str]:
    """The qualified names of the Linear layers ``quantize_int8`` replaces, owner by owner:
    the eligible ones in the submodule named ``within`` ("" for the whole model)."""
    names = []
    for owner_name, owner in model.get_submodule(within).named_modules(prefix=within):
        direct = set(getattr(owner, "direct_weights", ()))
        for child_name, child in owner.named_children():
            if type(child) is nn.Linear and child_name not in direct and child.out_features > 1:
                names.append(f"{owner_name}.{child_name}" if owner_name else child_name)
    return names


def quantize_int8(model: nn.Module, within: str = "sequence") -> nn.Module:
    """A copy of a float32 CPU ``model`` with its eligible Linear layers in dynamic int8.

    Args:
        model: an eval-mode float32 model on the CPU (its weights as they will be served).
        within: the submodule whose Linear layers are quantized ("" for the whole model).

    Returns:
        the quantized copy, in eval mode; ``model`` is left as it was.
    """
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("int8 dynamic quantization runs on the CPU only")
    if any(p.dtype != torch.float32 for p in model.parameters() if p.is_floating_point()):
        raise ValueError("quantize a float32 model (not one cast to bf16)")
    qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
    spec = {name: qconfig for name in int8_linear_names(model, within)}
    with warnings.catch_warnings():
        # torch.ao.quantization's deprecation notice and that of quantized tensor dtypes
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantiz.*deprecated", category=UserWarning)
        # the qconfig makes the weights qint8; inplace=False quantizes a deep copy
        quantized = torch.ao.quantization.quantize_dynamic(model, spec, inplace=False)
    return quantized.eval()
