"""DHEN non-sequence module (paper A.1; Zhang et al. 2022, "DHEN").

h0 = Concat(sparse embeddings, dense features, float features, sequence summaries) projected
to d_ns; each of L_NS layers runs an ensemble of heterogeneous interaction modules on the same
input and adds their sum back with a residual and a norm:

    h_l = LayerNorm(h_{l-1} + sum_m Module_m(h_{l-1}, h_0))

Modules: ``cross`` is a DCN-v2 cross layer (explicit bounded-degree interactions with h_0),
``mlp`` an implicit interaction MLP.
"""

from __future__ import annotations

import torch
from torch import nn


class CrossInteraction(nn.Module):
    """DCN-v2: x0 * (W h + b); with the layer residual this is the classic cross layer."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, h: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        return h0 * self.linear(h)


class MLPInteraction(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(width, 2 * width), nn.SiLU(), nn.Linear(2 * width, width)
        )

    def forward(self, h: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        return self.net(h)


_MODULES = {"cross": CrossInteraction, "mlp": MLPInteraction}


class DHENLayer(nn.Module):
    def __init__(self, width: int, modules: list[str]) -> None:
        super().__init__()
        self.ensemble = nn.ModuleList(_MODULES[m](width) for m in modules)
        self.norm = nn.LayerNorm(width)

    def forward(self, h: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        return self.norm(h + sum(m(h, h0) for m in self.ensemble))


class DHEN(nn.Module):
    def __init__(self, d_in: int, width: int, n_layers: int, modules: list[str]) -> None:
        super().__init__()
        self.input = nn.Sequential(nn.Linear(d_in, width), nn.LayerNorm(width))
        self.layers = nn.ModuleList(DHENLayer(width, modules) for _ in range(n_layers))

    def forward(self, h0: torch.Tensor) -> torch.Tensor:
        """h0 (B, d_in) concatenated features -> z (B, width)."""
        h0 = self.input(h0)
        h = h0
        for layer in self.layers:
            h = layer(h, h0)
        return h
