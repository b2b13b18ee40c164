"""Toy models with known circuits, their data, and one trainer for all of them (spec §4)."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .decomposition import Decomposition
from .gradients import GradientCollector
from .train import GradientSource, History, fit


def sparse_features(
    n_samples: int,
    n_features: int,
    p_active: float = 0.05,
    low: float = 0.0,
    high: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Samples whose features are each active with probability p_active, uniform on [low, high];
    all-zero samples are dropped (and replaced): (n_samples, n_features)."""
    rows: list[Tensor] = []
    have = 0
    while have < n_samples:
        active = torch.rand(n_samples, n_features, generator=generator) < p_active
        values = low + (high - low) * torch.rand(n_samples, n_features, generator=generator)
        x = (values * active)[active.any(1)]
        rows.append(x)
        have += x.shape[0]
    return torch.cat(rows)[:n_samples]


class TMS(nn.Module):
    """Toy model of superposition: x̂ = ReLU(W_out W_in x + b), trained with W_out = W_inᵀ.

    `untied()` gives the same function with W_out as a parameter of its own, as L3D decomposes it.
    """

    def __init__(self, n_features: int = 5, n_hidden: int = 2, tied: bool = True):
        super().__init__()
        self.tied = tied
        self.W_in = nn.Parameter(torch.randn(n_hidden, n_features) * (2 / n_features) ** 0.5)
        if not tied:
            self.W_out = nn.Parameter(self.W_in.detach().T.clone())
        self.b = nn.Parameter(torch.zeros(n_features))

    def weight_out(self) -> Tensor:
        return self.W_in.T if self.tied else self.W_out

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x @ self.W_in.T @ self.weight_out().T + self.b)

    def untied(self) -> TMS:
        """A copy with W_in, W_out and b as separate parameters."""
        n_hidden, n_features = self.W_in.shape
        model = TMS(n_features, n_hidden, tied=False)
        with torch.no_grad():
            model.W_in.copy_(self.W_in)
            model.W_out.copy_(self.weight_out())
            model.b.copy_(self.b)
        return model


def train_toy(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    epochs: int = 1000,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Fit `model` to targets by MSE with AdamW; returns the mean loss of every epoch."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    bar = tqdm(range(epochs), desc="train toy", disable=not progress)
    for _ in bar:
        order = torch.randperm(inputs.shape[0], generator=generator)
        total = 0.0
        for idx in order.split(batch_size):
            loss = (model(inputs[idx]) - targets[idx]).pow(2).sum(-1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * idx.numel()
        losses.append(total / inputs.shape[0])
        bar.set_postfix(loss=f"{losses[-1]:.4g}")
    return losses


def group_features(
    n_samples: int,
    n_groups: int,
    group_size: int,
    p_active: float = 0.05,
    low: float = 0.0,
    high: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Samples whose features switch on and off in groups: group g is active with probability p_active,
    and then all its `group_size` features are uniform on [low, high]; all-zero samples are dropped.

    Returns (n_samples, n_groups * group_size); features g*group_size … (g+1)*group_size − 1 form group g.
    """
    groups = sparse_features(n_samples, n_groups, p_active, generator=generator) > 0   # (N, n_groups)
    values = low + (high - low) * torch.rand(n_samples, n_groups * group_size, generator=generator)
    return values * groups.repeat_interleave(group_size, dim=1)


def feature_groups(n_groups: int, group_size: int) -> list[list[int]]:
    """The features of each group as `group_features` lays them out."""
    return [list(range(g * group_size, (g + 1) * group_size)) for g in range(n_groups)]


def random_coefficients(n_out: int, n_in: int, high: float = 3.0, generator: torch.Generator | None = None) -> Tensor:
    """A coefficient matrix with entries uniform on [0, high]: (n_out, n_in)."""
    return high * torch.rand(n_out, n_in, generator=generator)


class MLP(nn.Module):
    """Fully connected network `sizes[0] → … → sizes[-1]` with `activation` between layers.

    Parameters are named layers.{i}.weight (out, in) and layers.{i}.bias (out,).
    """

    def __init__(self, sizes: list[int], activation: str = "relu"):
        super().__init__()
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"sizes must list at least an input and an output width, all ≥ 1; got {sizes}")
        activations = {"relu": nn.functional.relu, "gelu": nn.functional.gelu}
        if activation not in activations:
            raise ValueError(f"unknown activation {activation!r}: use one of {sorted(activations)}")
        self.sizes = list(sizes)
        self.activation = activations[activation]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.layers[-1](x)


def circuit_superposition(n_features: int = 10, n_hidden: int = 5) -> MLP:
    """Toy model of circuit superposition (TMCS): n_features → n_hidden ReLU → n_features, fit to x ↦ A x."""
    return MLP([n_features, n_hidden, n_features], "relu")


def high_rank_circuits(n_features: int = 25, n_hidden: int = 10) -> MLP:
    """Higher-rank circuits: n_features (in groups) → n_hidden ReLU → n_features, fit to x ↦ A x."""
    return MLP([n_features, n_hidden, n_features], "relu")


def square_mlp(n_features: int = 5, width: int = 5, depth: int = 4) -> MLP:
    """Complex loss landscape: GeLU MLP n_features → depth hidden layers of `width` → n_features, fit to x ↦ x²."""
    return MLP([n_features, *[width] * depth, n_features], "gelu")


def decompose_toy(
    model: nn.Module,
    inputs: Tensor,
    n_subnetworks: int,
    rank: int = 1,
    tensors: str | list[str] = "*",
    top_k: float = 0.1,
    epochs: int = 1000,
    batch_size: int = 32,
    lr: float = 0.01,
    lr_decay: float = 0.8,
    lr_decay_every: int = 100,
    warm_start_epochs: int = 0,
    restarts: int = 1,
    seed: int = 0,
    progress: bool = True,
) -> tuple[Decomposition, History, GradientCollector, GradientSource]:
    """L3D on a toy model as in the paper: MSE divergence to a random other sample's output, Adam with
    lr × lr_decay every lr_decay_every epochs, all of `inputs` in one gradient chunk per epoch.

    With restarts > 1 it trains that many decompositions (seeds seed, seed + 1000, …) and keeps the one with
    the lowest final training error (no ground truth involved). Returns the decomposition, its history, the
    gradient collector and the source (for `l3d.evaluate`).
    """
    if restarts < 1:
        raise ValueError(f"restarts must be at least 1, got {restarts}")
    collector = GradientCollector(model, tensors, divergence="mse", reference="random", chunk_size=inputs.shape[0])
    chunk = inputs.shape[0] // batch_size * batch_size
    best = None
    for r in range(restarts):
        run_seed = seed + 1000 * r
        source = GradientSource(collector, inputs, batch_size=batch_size, chunk_size=chunk, seed=run_seed)
        decomposition = Decomposition(collector.shapes, n_subnetworks, rank=rank, top_k=top_k, seed=run_seed)
        decomposition = decomposition.to(inputs.device)
        history = fit(decomposition, source, epochs, lr, lr_decay, lr_decay_every, warm_start_epochs, progress)
        if best is None or history.reconstruction_error[-1] < best[1].reconstruction_error[-1]:
            best = (decomposition, history, collector, source)
    return best
