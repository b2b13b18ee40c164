"""Training the field benchmarks' toys as SPD does: the tied TMS with SPD's two AdamW updates of one shared matrix
(`train_benchmark_tms`), its untrained control (`random_tms`), and the residual MLP (`train_resid_mlp`)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ...runtime.progress import tqdm
from ..toy_models import TMS
from .models import ResidMLP, benchmark_features


def _tms_init(n_features: int, n_hidden: int, zero_bias: bool) -> tuple[Tensor, Tensor]:
    """nn.Linear's default initialization of linear1's weight and linear2's bias (zero when zero_bias)."""
    linear1, linear2 = nn.Linear(n_features, n_hidden, bias=False), nn.Linear(n_hidden, n_features)
    return linear1.weight.detach(), torch.zeros(n_features) if zero_bias else linear2.bias.detach()


def train_benchmark_tms(n_features: int, n_hidden: int, seeds: Sequence[int], steps: int = 10_000,
                        batch_size: int = 1024, lr: float = 5e-3, p_active: float = 0.05, zero_bias: bool = False,
                        restarts: int = 1, weight_decay: float = 0.01,
                        progress: bool = True) -> tuple[list[TMS], list[float]]:
    """One tied TMS per seed trained as SPD's train_tms.py does, the best of `restarts` initializations by final
    loss (the mean over the last 100 steps); returns the models and their final losses.

    Initializations: torch.manual_seed(seed), then nn.Linear's default for linear1 and linear2 `restarts` times
    (the first is SPD's model of that seed; bias zeroed when zero_bias). SPD ties linear2.weight to a view of
    linear1.weight and hands both to AdamW, so each step applies both parameters' AdamW updates (each with its
    own moments and decay) to the one shared matrix; this does the same, for all models at once, each on its own
    fresh batch every step (one generator seeded 30,000 + seeds[0] draws them all).
    """
    if steps < 1 or batch_size < 1 or lr <= 0 or not 0 < p_active <= 1 or restarts < 1:
        raise ValueError(f"need steps >= 1, batch_size >= 1, lr > 0, p_active in (0, 1] and restarts >= 1, got "
                         f"{steps}, {batch_size}, {lr}, {p_active}, {restarts}")
    inits = []
    for s in seeds:
        torch.manual_seed(s)
        inits += [_tms_init(n_features, n_hidden, zero_bias) for _ in range(restarts)]
    w1 = torch.stack([w for w, _ in inits]).requires_grad_()          # (M, H, F): linear1
    w2 = w1.detach().transpose(1, 2).clone().requires_grad_()         # (M, F, H): linear2, tied
    b = torch.stack([b for _, b in inits]).requires_grad_()           # (M, F)
    optimizer = torch.optim.AdamW([w1, w2, b], lr=lr, weight_decay=weight_decay, foreach=False)
    generator = torch.Generator().manual_seed(30_000 + seeds[0])
    decay = 1 - lr * weight_decay
    recent = torch.zeros(len(inits))
    bar = tqdm(range(steps), desc=f"train {len(inits)} TMS {n_features}-{n_hidden}", disable=not progress)
    for step in bar:
        x = benchmark_features(len(inits) * batch_size, n_features, p_active,
                               generator=generator).view(len(inits), batch_size, -1)
        out = torch.relu(torch.baddbmm(b[:, None], torch.bmm(x, w1.transpose(1, 2)), w2.transpose(1, 2)))
        losses = (x - out).pow(2).mean(dim=(1, 2))
        before = w1.detach().clone()
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        optimizer.step()
        with torch.no_grad():   # linear1's update, then linear2's on the same storage (see the docstring)
            shared = (w1 - before) * decay + w2.transpose(1, 2)
            w1.copy_(shared)
            w2.copy_(shared.transpose(1, 2))
        if step >= steps - 100:
            recent += losses.detach()
    final = recent / min(100, steps)
    best = [min(range(i * restarts, (i + 1) * restarts), key=lambda m: final[m].item()) for i in range(len(seeds))]
    return ([TMS.from_weights(w1[m].detach(), b[m].detach(), layout="linear") for m in best],
            [final[m].item() for m in best])


def random_tms(n_features: int, n_hidden: int, seed: int, zero_bias: bool = False) -> TMS:
    """The untrained toy of `seed`: the initialization `train_benchmark_tms` starts from (the control)."""
    torch.manual_seed(seed)
    return TMS.from_weights(*_tms_init(n_features, n_hidden, zero_bias), layout="linear")


def resid_labels(x: Tensor) -> Tensor:
    """SPD's act_plus_resid target with trivial coefficients: ReLU(x) + x."""
    return torch.relu(x) + x


def train_resid_mlp(seed: int, n_features: int = 100, d_embed: int = 1000, d_mlp: int = 50, steps: int = 1000,
                    batch_size: int = 2048, lr: float = 3e-3, p_active: float = 0.01, weight_decay: float = 0.01,
                    progress: bool = True) -> tuple[ResidMLP, float]:
    """One residual MLP trained as SPD's train_resid_mlp.py (fresh batches, x uniform on [−1, 1], AdamW with a
    cosine schedule to 0, loss mean((y − ReLU(x) − x)²)); torch.manual_seed(seed) first. Returns the model and
    the mean loss of the last 10 steps."""
    torch.manual_seed(seed)
    model = ResidMLP(n_features, d_embed, d_mlp)
    parameters = list(model.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    generator = torch.Generator().manual_seed(40_000 + seed)
    losses = []
    for _ in tqdm(range(steps), desc=f"train residual MLP, seed {seed}", disable=not progress):
        x = benchmark_features(batch_size, n_features, p_active, low=-1.0, high=1.0, generator=generator)
        loss = (model(x) - resid_labels(x)).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return model, sum(losses[-10:]) / len(losses[-10:])
