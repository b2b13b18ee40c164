"""The field benchmarks' toys as goodfire-ai/spd defines them: SPD's TMS (`PeerTMS`), the residual MLP
(`ResidMLP`), and the peers' data (`peer_features`)."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class PeerTMS(nn.Module):
    """SPD's TMS: x̂ = ReLU(linear2(hidden_layers(linear1(x)))), untied (as decomposed), optional identity layers.

    Parameters linear1.weight (n_hidden, n_features), hidden_layers.{i}.weight (n_hidden, n_hidden),
    linear2.weight (n_features, n_hidden), linear2.bias (n_features,): the peers' names.
    """

    def __init__(self, n_features: int, n_hidden: int, n_hidden_layers: int = 0):
        super().__init__()
        self.linear1 = nn.Linear(n_features, n_hidden, bias=False)
        self.hidden_layers = nn.ModuleList(nn.Linear(n_hidden, n_hidden, bias=False) for _ in range(n_hidden_layers))
        self.linear2 = nn.Linear(n_hidden, n_features, bias=True)

    @classmethod
    def tied(cls, weight: Tensor, bias: Tensor, n_hidden_layers: int = 0) -> PeerTMS:
        """The toy with linear1 = weight (n_hidden, n_features), linear2 = weightᵀ, bias, identity hidden layers."""
        n_hidden, n_features = weight.shape
        model = cls(n_features, n_hidden, n_hidden_layers)
        with torch.no_grad():
            model.linear1.weight.copy_(weight)
            model.linear2.weight.copy_(weight.T)
            model.linear2.bias.copy_(bias)
            for layer in model.hidden_layers:
                layer.weight.copy_(torch.eye(n_hidden))
        return model.to(weight.device)

    def with_identity(self) -> PeerTMS:
        """The same function with one identity hidden layer added (the `-id` settings)."""
        return PeerTMS.tied(self.linear1.weight.detach(), self.linear2.bias.detach(), len(self.hidden_layers) + 1)

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.linear1(x)
        for layer in self.hidden_layers:
            hidden = layer(hidden)
        return torch.relu(self.linear2(hidden))


def peer_features(n_samples: int, n_features: int, p_active: float, low: float = 0.0, high: float = 1.0,
                  generator: torch.Generator | None = None) -> Tensor:
    """The peers' `at_least_zero_active` data: each feature on with probability p_active, uniform on [low, high],
    all-zero samples kept: (n_samples, n_features)."""
    values = low + (high - low) * torch.rand(n_samples, n_features, generator=generator)
    return values * (torch.rand(n_samples, n_features, generator=generator) < p_active)


class ResidMLP(nn.Module):
    """SPD's residual MLP: y = W_U (r + mlp_out(ReLU(mlp_in(r)))), r = W_E x, one layer, no biases.

    W_E (n_features, d_embed) and W_U = W_Eᵀ are fixed buffers (the peers' fixed_random_embedding); the
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
