"""The field benchmarks' residual MLP as goodfire-ai/spd defines it (`ResidMLP`), and the benchmarks' data
(`benchmark_features`). Their TMS is `toy_models.TMS` in the "linear" layout (SPD's nn.Linear modules and names)."""
from __future__ import annotations

import torch
from torch import Tensor, nn


def benchmark_features(n_samples: int, n_features: int, p_active: float, low: float = 0.0, high: float = 1.0,
                       generator: torch.Generator | None = None) -> Tensor:
    """SPD's `at_least_zero_active` data: each feature on with probability p_active, uniform on [low, high],
    all-zero samples kept: (n_samples, n_features)."""
    values = low + (high - low) * torch.rand(n_samples, n_features, generator=generator)
    return values * (torch.rand(n_samples, n_features, generator=generator) < p_active)


class ResidMLP(nn.Module):
    """SPD's residual MLP: y = W_U (r + mlp_out(ReLU(mlp_in(r)))), r = W_E x, one layer, no biases.

    W_E (n_features, d_embed) and W_U = W_Eᵀ are fixed buffers (SPD's fixed_random_embedding); the
    decomposed parameters are layers.0.mlp_in.weight (d_mlp, d_embed) and layers.0.mlp_out.weight (d_embed, d_mlp).
    """

    def __init__(self, n_features: int = 100, d_embed: int = 1000, d_mlp: int = 50):
        super().__init__()
        embedding = torch.randn(n_features, d_embed)
        self.register_buffer("W_E", embedding / embedding.norm(dim=-1, keepdim=True))
        self.layers = nn.ModuleList([nn.ModuleDict({"mlp_in": nn.Linear(d_embed, d_mlp, bias=False),
                                                    "mlp_out": nn.Linear(d_mlp, d_embed, bias=False)})])

    def forward(self, x: Tensor) -> Tensor:
        residual = x @ self.W_E
        for layer in self.layers:
            residual = residual + layer["mlp_out"](torch.relu(layer["mlp_in"](residual)))
        return residual @ self.W_E.T
