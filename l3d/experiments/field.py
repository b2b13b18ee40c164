"""The field's shared toy benchmarks (notebook 07): the toys that APD and SPD are scored on, built and trained as
goodfire-ai/spd defines them, decomposed by L3D and scored with the field's metrics, MMCS and ML2R.

Toys (goodfire-ai/spd at commit 3f0bb61e, our own code):

* TMS n-m (`PeerTMS`; spd/experiments/tms/models.py:23-64): `x̂ = ReLU(linear2(hidden(linear1(x))))`,
  linear1 (m × n, no bias), linear2 (n × m, bias) tied to linear1ᵀ while training, and for the `-id` settings
  one hidden layer (m × m, no bias) fixed to the identity (train_tms.py:134-144). Trained on fresh batches
  where every feature is on with probability 0.05, uniform on [0, 1] (`at_least_zero_active`,
  spd/utils/data_utils.py:242-252), loss mean((x − x̂)²), AdamW lr 5e-3 constant, weight decay 0.01 (torch's
  default), 10,000 steps, batch 1024 (5-2) or 8192 (40-10); 40-10 starts with a zero bias
  (train_tms.py:26-66, 339-422). A fixed identity changes nothing in training, so a seed's `-id` toy has the
  weights of its plain toy, with the identity inserted (`PeerTMS.with_identity`).
* Residual MLP (`ResidMLP`; spd/experiments/resid_mlp/models.py:40-106, train_resid_mlp.py:215-245):
  `y = W_U (r + mlp_out(ReLU(mlp_in(r))))`, `r = W_E x`, 100 features, a fixed random embedding W_E
  (1000-dim rows of unit norm) with W_U = W_Eᵀ, 50 ReLU neurons without biases, trained to
  `ReLU(x) + x` with features on with probability 0.01, uniform on [−1, 1] (resid_mlp_dataset.py:50-100),
  batch 2048, 1000 steps, AdamW lr 3e-3 cosine to 0, weight decay 0.01.

Metrics (`field_scores`; spd/experiments/tms/plotting.py:81-104 and 941-959, the papers' definitions in
papers/*_paper.md): for every feature j, the model's weight column W[:, j] of linear1 (the neurons' input from
feature j for the residual MLP: mlp_in W_E[j]) against the same slice of every component;
MMCS = mean over j of the max over components of the cosine; ML2R = mean over j of the norm of that best
component's slice over the norm of W[:, j]. L3D's decoder directions have unit norm and no sign, so the
cosine is |cos|, and a subnetwork's weights are its direction times the least-squares coefficient of the
model's weights in the basis of the subnetworks' directions (`least_squares_components`).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..pipeline import L3DConfig, Run, decompose
from ..refit import Refit, refit_
from ..train import GradientSource, ZeroGradients
from ..runtime.progress import tqdm
from ..runtime.settings import Settings, bounded
from .ground_truth import match

RECOVERED = 0.95   # a feature is recovered when its one-to-one matched subnetwork's |cos| reaches this
TMS_SIZES = {"5-2": (5, 2), "40-10": (40, 10)}
# the peers' published numbers (SPD: papers/Stochastic_Parameter_Decomposition/spd_paper.md:169-174; APD:
# papers/Attribution_based_Parameter_Decomposition/apd_paper.md:156-159)
PUBLISHED = {
    "5-2": {"APD": {"mmcs": 0.998, "ml2r": 0.893}, "SPD": {"mmcs": 1.000, "ml2r": 0.993}},
    "40-10": {"APD": {"mmcs": 0.996, "ml2r": 0.935}, "SPD": {"mmcs": 1.000, "ml2r": 1.010}},
    "5-2-id": {"SPD": {"mmcs": 1.000, "ml2r": 0.992}},
    "40-10-id": {"SPD": {"mmcs": 1.000, "ml2r": 1.031}},
}


def parse_tms(setting: str) -> tuple[int, int, bool]:
    """(n_features, n_hidden, identity hidden layer) of a TMS setting "5-2", "5-2-id", "40-10" or "40-10-id"."""
    size, identity = (setting[:-3], True) if setting.endswith("-id") else (setting, False)
    if size not in TMS_SIZES:
        raise ValueError(f"unknown TMS setting {setting!r}: use one of "
                         f"{sorted(TMS_SIZES) + [s + '-id' for s in sorted(TMS_SIZES)]}")
    return (*TMS_SIZES[size], identity)


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


def _tms_init(n_features: int, n_hidden: int, zero_bias: bool) -> tuple[Tensor, Tensor]:
    """nn.Linear's default initialization of linear1's weight and linear2's bias (zero when zero_bias)."""
    linear1, linear2 = nn.Linear(n_features, n_hidden, bias=False), nn.Linear(n_hidden, n_features)
    return linear1.weight.detach(), torch.zeros(n_features) if zero_bias else linear2.bias.detach()


def train_peer_tms(n_features: int, n_hidden: int, seeds: Sequence[int], steps: int = 10_000, batch_size: int = 1024,
                   lr: float = 5e-3, p_active: float = 0.05, zero_bias: bool = False, restarts: int = 1,
                   weight_decay: float = 0.01, progress: bool = True) -> tuple[list[PeerTMS], list[float]]:
    """One tied TMS per seed trained as SPD's train_tms.py does, the best of `restarts` initializations by final
    loss (the mean over the last 100 steps); returns the models and their final losses.

    Initializations: torch.manual_seed(seed), then nn.Linear's default for linear1 and linear2 `restarts` times
    (the first is the peers' model of that seed; bias zeroed when zero_bias). SPD ties linear2.weight to a view of
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
        x = peer_features(len(inits) * batch_size, n_features, p_active, generator=generator).view(len(inits), batch_size, -1)
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
    return [PeerTMS.tied(w1[m].detach(), b[m].detach()) for m in best], [final[m].item() for m in best]


def random_tms(n_features: int, n_hidden: int, seed: int, zero_bias: bool = False) -> PeerTMS:
    """The untrained toy of `seed`: the initialization `train_peer_tms` starts from (the control)."""
    torch.manual_seed(seed)
    return PeerTMS.tied(*_tms_init(n_features, n_hidden, zero_bias))


def least_squares_components(weights: dict[str, Tensor], directions: dict[str, Tensor]) -> Tensor:
    """Coefficients a (C,) minimizing Σ_tensors ‖W − Σ_k a_k d_k‖²: the model's weights in the basis of the
    subnetworks' directions (name -> (C, *shape)), over the tensors named in `weights`."""
    basis = torch.cat([directions[n].flatten(1) for n in weights], dim=1).double()     # (C, n_w)
    target = torch.cat([w.flatten() for w in weights.values()]).double()               # (n_w,)
    return torch.linalg.lstsq(basis.T, target[:, None]).solution[:, 0].float()


def column_scores(columns: Tensor, slices: Tensor, coefficients: Tensor) -> dict:
    """The field's metrics for one weight matrix. columns: (F, D) the model's weight column of every feature;
    slices: (C, F, D) the same slice of every subnetwork's unit-norm direction; coefficients: (C,) their
    least-squares sizes.

    Returns mmcs (mean over features of the max |cos| over subnetworks), ml2r (mean ‖a_k slice_k‖ / ‖W column‖
    for that best k), per-feature max_cos, l2_ratio and best, and the one-to-one matching (`match` on
    |cos| × the share of the subnetwork's norm in that feature's slice): pairs, matched_cos, recovered
    (matched |cos| ≥ RECOVERED), all_recovered.
    """
    if slices.dim() != 3 or columns.dim() != 2 or slices.shape[1:] != columns.shape:
        raise ValueError(f"slices must be (C, F, D) and columns (F, D), got {tuple(slices.shape)} and {tuple(columns.shape)}")
    columns, slices = columns.detach().float().cpu(), slices.detach().float().cpu()
    cos = torch.nn.functional.cosine_similarity(slices, columns[None], dim=-1, eps=1e-12).abs()   # (C, F)
    best_cos, best = cos.max(0)
    sizes = coefficients.detach().float().cpu().abs()[best] * slices[best, torch.arange(columns.shape[0])].norm(dim=-1)
    ratio = sizes / columns.norm(dim=-1).clamp_min(1e-30)
    share = slices.norm(dim=-1) / slices.flatten(1).norm(dim=1, keepdim=True).clamp_min(1e-30)     # (C, F)
    pairs = match((cos * share).T)
    matched = [cos[k, j].item() for j, k in pairs]
    recovered = sum(c >= RECOVERED for c in matched)
    return {"mmcs": best_cos.mean().item(), "ml2r": ratio.mean().item(), "max_cos": best_cos.tolist(),
            "l2_ratio": ratio.tolist(), "best": best.tolist(), "pairs": pairs, "matched_cos": matched,
            "recovered": recovered, "all_recovered": recovered == columns.shape[0]}


def tms_scores(model: PeerTMS, directions: dict[str, Tensor]) -> dict:
    """`column_scores` of a TMS decomposition on linear1 (as SPD scores W): columns linear1.weight[:, j], slices
    the subnetworks' linear1 columns, sizes from least squares on linear1."""
    weight = model.linear1.weight.detach()
    coefficients = least_squares_components({"linear1.weight": weight}, directions)
    return column_scores(weight.T, directions["linear1.weight"].transpose(1, 2), coefficients)


def chance_mmcs(n_features: int, n_hidden: int, n_subnetworks: int, trials: int = 200, seed: int = 0) -> float:
    """MMCS of random directions: the mean over trials of the max |cos| over n_subnetworks random
    n_hidden-dimensional directions against a fixed one, what a decomposition blind to the features scores."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(trials, 1, n_hidden, generator=g)
    guesses = torch.randn(trials, n_subnetworks, n_hidden, generator=g)
    return torch.nn.functional.cosine_similarity(guesses, target, dim=-1).abs().max(1).values.mean().item()


def median_min_success(rows: Sequence[dict], key: str = "mmcs") -> dict:
    """Over seeds: median and min of `key`, median ML2R, and the success count (seeds with every feature recovered)."""
    values = sorted(r[key] for r in rows)
    n = len(values)
    median = values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2
    ml2r = sorted(r["ml2r"] for r in rows)
    return {"median": median, "min": values[0], "max": values[-1], "ml2r_median": ml2r[n // 2] if n % 2 else
            (ml2r[n // 2 - 1] + ml2r[n // 2]) / 2, "ml2r_min": ml2r[0], "ml2r_max": ml2r[-1],
            "success": sum(r["all_recovered"] for r in rows), "seeds": n}


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


def resid_labels(x: Tensor) -> Tensor:
    """The peers' act_plus_resid target with trivial coefficients: ReLU(x) + x."""
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
        x = peer_features(batch_size, n_features, p_active, low=-1.0, high=1.0, generator=generator)
        loss = (model(x) - resid_labels(x)).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return model, sum(losses[-10:]) / len(losses[-10:])


def resid_scores(model: ResidMLP, directions: dict[str, Tensor]) -> dict:
    """`column_scores` of a residual-MLP decomposition on mlp_in: feature j's column is mlp_in W_E[j] (the
    neurons' input from feature j), a subnetwork's slice its mlp_in direction applied to W_E[j]."""
    name = "layers.0.mlp_in.weight"
    weight, embedding = dict(model.named_parameters())[name].detach(), model.W_E
    coefficients = least_squares_components({name: weight}, directions)
    return column_scores(embedding @ weight.T, torch.einsum("fd,cmd->cfm", embedding, directions[name].detach()),
                         coefficients)


@dataclass(frozen=True)
class PeerTraining(Settings):
    """How the TMS toys are trained (SPD's train_tms.py: 10,000 steps, lr 5e-3, batch 1024 for 5-2 and 8192 for
    40-10, features on with probability 0.05). restarts (restarts_40_10 for 40-10): initializations per seed, the
    lowest final loss kept (SPD: 1, one hand-picked run per toy)."""

    steps: int = bounded(10_000, low=1)
    lr: float = bounded(5e-3, low=0, open_low=True)
    batch_size: int = bounded(1024, low=1)
    batch_size_40_10: int = bounded(8192, low=1)
    restarts: int = bounded(4, low=1)
    restarts_40_10: int = bounded(1, low=1)
    p_active: float = bounded(0.05, low=0, high=1, open_low=True, unprefixed=True)

    def batch_for(self, n_features: int) -> int:
        """The batch size of the n_features toy."""
        return self.batch_size_40_10 if n_features == 40 else self.batch_size

    def restarts_for(self, n_features: int) -> int:
        """Initializations per seed of the n_features toy."""
        return self.restarts_40_10 if n_features == 40 else self.restarts


@dataclass(frozen=True)
class ResidSettings(Settings):
    """The residual-MLP toy (SPD's 1-layer config: 100 features, d_embed 1000, 50 neurons, p 0.01, 1000 steps of
    2048, lr 3e-3 cosine) and its decomposition: n_subnetworks = n_features, n_samples L3D samples, top_k,
    epochs, lr decayed every epochs / 10; the notebook's other L3D settings."""

    n_features: int = bounded(100, low=2)
    d_embed: int = bounded(1000, low=2)
    d_mlp: int = bounded(50, low=1)
    p_active: float = bounded(0.01, low=0, high=1, open_low=True)
    steps: int = bounded(1000, low=1)
    batch_size: int = bounded(2048, low=1)
    lr: float = bounded(3e-3, low=0, open_low=True)
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    n_samples: int = bounded(2000, low=2)
    top_k: float = bounded(0.02, low=0, high=1, open_low=True)
    epochs: int = bounded(50, low=1)


@dataclass(frozen=True)
class SparseSamples(Settings):
    """The sparser-samples variant (ours; off by default): the 40-feature settings named here (those among
    tms_settings) decomposed again, on n_samples L3D samples per seed with features on with probability p_active
    (the toy's data: 0.05), BatchTopK's top_k and its own epochs, everything else as in the main runs. Fewer
    samples carry two or more features, whose gradients' cross terms no one feature's subnetwork can reconstruct
    (notebook 07, §7)."""

    settings: list[str] = dataclasses.field(default_factory=list)
    p_active: float = bounded(0.01, low=0, high=1, open_low=True)
    n_samples: int = bounded(8000, low=2)
    top_k: float = bounded(0.01, low=0, high=1, open_low=True)
    epochs: int = bounded(40, low=1)


@dataclass(frozen=True)
class FieldExperiment(Settings):
    """Notebook 07: the TMS settings decomposed once per seed (the untrained controls once per control_seeds, None:
    every seed),
    n_subnetworks = n_features × subnetworks_per_feature, on n_samples L3D samples per seed with features on
    with probability l3d_p_active (None: the toy's p_active, the data distribution); 40-10 with its own
    n_samples_40_10, epochs_40_10, top_k_40_10 and restarts_40_10 (L3D starts screened); the residual MLP as
    `resid` says."""

    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2, 3, 4])
    seed: int = bounded(0, low=0)
    device: str = bounded("auto", choices=("auto", "cpu", "cuda"))
    out_dir: str = "figures"
    tms_settings: list[str] = dataclasses.field(default_factory=lambda: ["5-2", "5-2-id", "40-10", "40-10-id"])
    controls: list[str] = dataclasses.field(default_factory=lambda: ["5-2", "40-10"])
    control_seeds: list[int] | None = None
    n_samples: int = bounded(1000, low=2)
    n_samples_40_10: int = bounded(5000, low=2)
    epochs_40_10: int = bounded(30, low=1)
    restarts_40_10: int = bounded(1, low=1)
    top_k_40_10: float = bounded(0.05, low=0, high=1, open_low=True)
    l3d_p_active: float | None = bounded(None, low=0, high=1, open_low=True)
    refit_min_share: float | None = bounded(0.8, low=0, high=1, open_low=True)
    subnetworks_per_feature: int = bounded(1, low=1)
    toy: PeerTraining = dataclasses.field(default_factory=PeerTraining, metadata={"prefix": "toy_"})
    l3d: L3DConfig = dataclasses.field(default_factory=L3DConfig)
    resid: ResidSettings = dataclasses.field(default_factory=ResidSettings, metadata={"prefix": "resid_"})
    run_resid: bool = True
    sparse: SparseSamples = dataclasses.field(default_factory=SparseSamples, metadata={"prefix": "sparse_"})

    def check(self) -> list[str]:
        problems = []
        if not self.seeds or self.seed not in self.seeds or any(s < 0 for s in self.seeds):
            problems.append(f"seed {self.seed} must be one of seeds {self.seeds}, all ints >= 0")
        if self.control_seeds is not None and (not self.control_seeds or not set(self.control_seeds) <= set(self.seeds)):
            problems.append(f"control_seeds {self.control_seeds} must be None (every seed) or some of seeds {self.seeds}")
        for name in ("tms_settings", "controls"):
            for setting in getattr(self, name):
                try:
                    parse_tms(setting)
                except ValueError as e:
                    problems.append(f"{name}: {e}")
        if self.refit_min_share is not None and self.refit_min_share >= 1:
            problems.append(f"refit_min_share must be < 1 (or None: no refit rows), got {self.refit_min_share}")
        for setting in self.sparse.settings:
            if setting not in ("40-10", "40-10-id"):
                problems.append(f"sparse_settings: {setting!r} must be '40-10' or '40-10-id'")
        sample_counts = {"n_samples": self.n_samples, "n_samples_40_10": self.n_samples_40_10,
                         "resid_n_samples": self.resid.n_samples,
                         **({"sparse_n_samples": self.sparse.n_samples} if self.sparse_settings() else {})}
        if self.l3d.batch_size > min(sample_counts.values()):
            problems.append(f"batch_size {self.l3d.batch_size} must not exceed any of "
                            + ", ".join(f"{k} {v}" for k, v in sample_counts.items()))
        return problems

    def sparse_settings(self) -> list[str]:
        """The settings of the sparser-samples variant that also run in the main part (it reuses their toys)."""
        return [s for s in self.sparse.settings if s in self.tms_settings]

    def samples_for(self, n_features: int) -> int:
        """L3D samples per seed for the n_features toy."""
        return self.n_samples_40_10 if n_features == 40 else self.n_samples

    def l3d_config(self, n_features: int, n_samples: int, seed: int, **changes) -> L3DConfig:
        """One decomposition's settings: n_features × subnetworks_per_feature subnetworks, every sample in one
        gradient pass per epoch, `changes` on top."""
        batch = self.l3d.batch_size
        own = ({"epochs": self.epochs_40_10, "top_k": self.top_k_40_10, "restarts": self.restarts_40_10}
               if n_features == 40 else {})
        return self.l3d.replace(**{"n_subnetworks": n_features * self.subnetworks_per_feature, "seed": seed,
                                   "chunk_size": n_samples // batch * batch, **own, **changes})


def l3d_samples(settings: FieldExperiment, n_features: int, seed: int, p_active: float | None = None,
                n_samples: int | None = None, low: float = 0.0) -> Tensor:
    """The L3D samples of `seed` (generator seeded 20,000 + seed): the peers' data, features on with probability
    l3d_p_active (or the given p_active), all-zero samples kept."""
    p = p_active if p_active is not None else settings.l3d_p_active or settings.toy.p_active
    return peer_features(n_samples or settings.samples_for(n_features), n_features, p, low=low,
                         generator=torch.Generator().manual_seed(20_000 + seed))


def score_row(run: Run, scores: dict, setting: str, seed: int, seconds: float) -> dict:
    """A decomposition's row for metrics.json: the setting, seed, reconstruction error (one more pass), dead
    subnetworks, the epochs at which resampling re-seeded a subnetwork, the field's metrics and our recovery
    numbers, and the seconds it took."""
    evaluation = run.evaluate()
    return {"setting": setting, "seed": seed, "reconstruction_error": evaluation["reconstruction_error"],
            "dead": evaluation["dead"], "reseeded_at": [r["epoch"] for r in run.history.resampled if r["replaced"]],
            "seconds": seconds,
            **{k: scores[k] for k in ("mmcs", "ml2r", "recovered", "all_recovered", "max_cos", "l2_ratio",
                                      "matched_cos", "pairs")}}


def decompose_tms(settings: FieldExperiment, setting: str, toys: Sequence[PeerTMS], device: torch.device,
                  label: str | None = None, progress: bool = True,
                  skipped: list[dict] | None = None) -> tuple[list[dict], dict[int, Run]]:
    """L3D of one TMS setting's toy per seed (every tensor, the identity layer too for `-id`), scored by
    `tms_scores`. Returns a row per seed (`score_row`) and the runs; with refit_min_share also a row per seed
    labelled "<label> refit": the same decomposition after `l3d.refit.refit_` (the runs keep the trained one).
    skipped: a list to collect the seeds whose toy gives no gradient at all ({"setting", "seed", "reason"}; an
    untrained toy whose ReLU outputs are zero on every sample), which then get no row; None: such a toy is an error."""
    n_features, _, identity = parse_tms(setting)
    label = label or setting
    rows, refit_rows, runs = [], [], {}
    for seed, toy in zip(settings.seeds, toys):
        model = (toy.with_identity() if identity else toy).to(device)
        inputs = l3d_samples(settings, n_features, seed).to(device)
        started = time.perf_counter()
        try:
            run = decompose(model, inputs, "*", settings.l3d_config(n_features, inputs.shape[0], seed), progress=progress)
        except ZeroGradients as err:
            if skipped is None:
                raise
            skipped.append({"setting": label, "seed": seed, "reason": str(err).split(". ")[0]})
            continue
        seconds = time.perf_counter() - started
        rows.append(score_row(run, tms_scores(model, run.decomposition.decoder_directions()), label, seed, seconds))
        runs[seed] = run
        if settings.refit_min_share is not None:
            started = time.perf_counter()
            refitted, done = refit_decomposition(run, inputs, settings.refit_min_share)
            refit_rows.append({**score_row(refitted, tms_scores(model, refitted.decomposition.decoder_directions()),
                                           f"{label} refit", seed, seconds + time.perf_counter() - started),
                               "refit": done.to_dict()})
    return rows + refit_rows, runs


def refit_decomposition(run: Run, inputs: Tensor, min_share: float) -> tuple[Run, Refit]:
    """A copy of `run` with its decomposition refitted (`l3d.refit.refit_`) on `inputs`, references drawn with
    config.seed + 2, and what the refit did; the run's own decomposition is left as trained."""
    decomposition = copy.deepcopy(run.decomposition)
    source = GradientSource(run.collector, inputs, run.config.batch_size, chunk_size=run.config.chunk_size,
                            seed=run.config.seed + 2)
    done = refit_(decomposition, source, min_share=min_share)
    return dataclasses.replace(run, decomposition=decomposition), done


def decompose_sparse(settings: FieldExperiment, setting: str, toys: Sequence[PeerTMS], device: torch.device,
                     progress: bool = True) -> tuple[list[dict], dict[int, Run]]:
    """The sparser-samples variant of one 40-feature setting (`SparseSamples`): `decompose_tms` on its samples,
    rows labelled "<setting> sparse"."""
    sparse = dataclasses.replace(settings, l3d_p_active=settings.sparse.p_active,
                                 n_samples_40_10=settings.sparse.n_samples, top_k_40_10=settings.sparse.top_k,
                                 epochs_40_10=settings.sparse.epochs)
    return decompose_tms(sparse, setting, toys, device, label=f"{setting} sparse", progress=progress)


def train_all_tms(settings: FieldExperiment, progress: bool = True) -> dict[str, tuple[list[PeerTMS], list[float]]]:
    """The trained toys of every size the settings use, one per seed: size ("5-2", "40-10") -> (toys, losses)."""
    sizes = sorted({s.removesuffix("-id") for s in settings.tms_settings}, key=lambda s: TMS_SIZES[s])
    toys = {}
    for size in sizes:
        n_features, n_hidden = TMS_SIZES[size]
        t = settings.toy
        toys[size] = train_peer_tms(n_features, n_hidden, settings.seeds, t.steps, t.batch_for(n_features), t.lr,
                                    t.p_active, zero_bias=n_features == 40, restarts=t.restarts_for(n_features),
                                    progress=progress)
    return toys


def decompose_controls(settings: FieldExperiment, size: str, device: torch.device,
                       progress: bool = True) -> tuple[list[dict], dict[int, Run], list[dict]]:
    """The control: `decompose_tms` of the untrained toy of `size` (the peers' initialization) of each of
    control_seeds, rows labelled "<size> random". Returns the rows, the runs and the seeds skipped because their
    untrained toy gives no gradient at all (its ReLU outputs are zero on every sample: nothing to decompose)."""
    n_features, n_hidden = TMS_SIZES[size]
    seeds = settings.seeds if settings.control_seeds is None else settings.control_seeds
    toys = [random_tms(n_features, n_hidden, seed, zero_bias=n_features == 40) for seed in seeds]
    skipped: list[dict] = []
    rows, runs = decompose_tms(dataclasses.replace(settings, seeds=seeds, seed=seeds[0]), size, toys, device,
                               label=f"{size} random", progress=progress, skipped=skipped)
    return rows, runs, skipped


def decompose_resid(settings: FieldExperiment, device: torch.device, progress: bool = True) -> tuple[list[dict], dict]:
    """Train and decompose the residual MLP per resid seed (mlp_in and mlp_out, n_features subnetworks), scored by
    `resid_scores`; also the untrained model of each seed as its control. Returns rows (setting "resid-mlp" and
    "resid-mlp random") and {seed: (model, run)} of the trained ones."""
    r = settings.resid
    rows, kept = [], {}
    for seed in r.seeds:
        trained, loss = train_resid_mlp(seed, r.n_features, r.d_embed, r.d_mlp, r.steps, r.batch_size, r.lr,
                                        r.p_active, progress=progress)
        torch.manual_seed(seed)
        untrained = ResidMLP(r.n_features, r.d_embed, r.d_mlp)
        inputs = l3d_samples(settings, r.n_features, seed, r.p_active, r.n_samples, low=-1.0).to(device)
        for label, model in (("resid-mlp", trained), ("resid-mlp random", untrained)):
            model = model.to(device)
            config = settings.l3d_config(r.n_features, r.n_samples, seed, top_k=r.top_k, epochs=r.epochs,
                                         engine="auto", lr_decay_every=max(1, r.epochs // 10))
            started = time.perf_counter()
            run = decompose(model, inputs, ["layers.0.mlp_in.weight", "layers.0.mlp_out.weight"], config,
                            progress=progress)
            row = score_row(run, resid_scores(model, run.decomposition.decoder_directions()), label, seed,
                            time.perf_counter() - started)
            rows.append({**row, "toy_loss": loss if model is trained else None})
            if model is trained:
                kept[seed] = (model, run)
    return rows, kept


def summarize(rows: Sequence[dict]) -> dict[str, dict]:
    """Per setting (in the order met): `median_min_success` of MMCS with ML2R, the median reconstruction error,
    the fewest features recovered in a seed, and the decompositions' CPU minutes."""
    summary: dict[str, dict] = {}
    for setting in dict.fromkeys(r["setting"] for r in rows):
        mine = [r for r in rows if r["setting"] == setting]
        errors = sorted(r["reconstruction_error"] for r in mine)
        summary[setting] = {**median_min_success(mine), "reconstruction_error_median": errors[len(errors) // 2],
                            "fewest_recovered": min(r["recovered"] for r in mine),
                            "n_features": len(mine[0]["max_cos"]),
                            "minutes": sum(r["seconds"] for r in mine) / 60}
    return summary


def headline_table(summary: dict[str, dict], minutes: bool = True) -> list[dict]:
    """One row per setting: the peers' published MMCS / ML2R beside L3D's median, min and success over seeds, and
    (minutes) the decompositions' CPU minutes."""
    rows = []
    for setting, s in summary.items():
        peers = PUBLISHED.get(setting, {})
        rows.append({
            "setting": setting,
            "APD MMCS / ML2R": "{mmcs:.3f} / {ml2r:.3f}".format(**peers["APD"]) if "APD" in peers else "-",
            "SPD MMCS / ML2R": "{mmcs:.3f} / {ml2r:.3f}".format(**peers["SPD"]) if "SPD" in peers else "-",
            "L3D MMCS median (min)": f"{s['median']:.4f} ({s['min']:.4f})",
            "L3D ML2R median (range)": f"{s['ml2r_median']:.3f} ({s['ml2r_min']:.3f}-{s['ml2r_max']:.3f})",
            "all features recovered": f"{s['success']} of {s['seeds']} (fewest {s['fewest_recovered']} of {s['n_features']})",
            "error": f"{s['reconstruction_error_median']:.3f}",
            **({"CPU min": f"{s['minutes']:.1f}"} if minutes else {}),
        })
    return rows


def seed_table(rows: Sequence[dict]) -> list[dict]:
    """One row per decomposition: setting, seed, MMCS, ML2R, features recovered, reconstruction error, and the
    epochs at which resampling re-seeded a subnetwork ("-": none)."""
    return [{"setting": r["setting"], "seed": r["seed"], "MMCS": f"{r['mmcs']:.4f}", "ML2R": f"{r['ml2r']:.3f}",
             "recovered": f"{r['recovered']}/{len(r['max_cos'])}", "error": f"{r['reconstruction_error']:.3f}",
             "re-seeded at epoch": ", ".join(map(str, r.get("reseeded_at", []))) or "-"}
            for r in rows]


def slice_shares(directions: Tensor) -> Tensor:
    """Each subnetwork's share of its linear1 norm in each feature's column: directions (C, H, F) -> (C, F)."""
    columns = directions.detach().float().cpu().norm(dim=1)                      # (C, F)
    return columns / columns.norm(dim=1, keepdim=True).clamp_min(1e-30)
