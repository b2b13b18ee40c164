"""Toy models with known circuits, their data, and one trainer for all of them (spec §4)."""
from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, stack_module_state, vmap

from ..runtime.progress import tqdm
from ..runtime.threads import threads_for
from ..runtime.validate import as_float, as_int
from .ground_truth import match

MAX_DRAWS, MAX_ROUNDS = 10**8, 10**5   # what sparse_features may draw to keep n_samples nonzero samples


def sparse_features(
    n_samples: int,
    n_features: int,
    p_active: float = 0.05,
    low: float = 0.0,
    high: float = 1.0,
    generator: torch.Generator | None = None,
    drop_zero: bool = True,
) -> Tensor:
    """Samples whose features are each active with probability p_active, uniform on [low, high]:
    (n_samples, n_features). drop_zero: all-zero samples are dropped (and replaced), as for toy training;
    False keeps them, so about (1 − p_active)^n_features of the samples are all zero.

    With drop_zero, a sample is kept with probability q = 1 − (1 − p_active)^n_features, so about n_samples / q
    samples are drawn, in 1 / q rounds of n_samples; settings that would need more than MAX_DRAWS samples or
    MAX_ROUNDS rounds (p_active = 1e-9) are refused rather than left to run for hours, and so is low = high = 0
    (every sample all zero)."""
    n_samples, n_features = as_int("n_samples", n_samples), as_int("n_features", n_features)
    p_active, low, high = as_float("p_active", p_active), as_float("low", low), as_float("high", high)
    if not 0 <= p_active <= 1:
        raise ValueError(f"p_active is a probability and must lie in [0, 1], got {p_active}")
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"low and high must be finite numbers, got low={low}, high={high}")
    if drop_zero and p_active == 0:
        raise ValueError("p_active = 0 makes every sample all zero, and drop_zero=True drops those: use p_active > 0 "
                         "(or drop_zero=False for all-zero samples)")
    if drop_zero and low == high == 0:
        raise ValueError("low = high = 0 makes every value, so every sample, zero, and drop_zero=True drops those: "
                         "give a range with a nonzero value (or drop_zero=False for all-zero samples)")
    kept = -math.expm1(n_features * math.log1p(-p_active)) if p_active < 1 else 1.0   # q, without cancellation
    if drop_zero and n_samples and (n_samples / kept > MAX_DRAWS or 1 / kept > MAX_ROUNDS):
        raise ValueError(
            f"p_active={p_active} with {n_features} features makes a nonzero sample 1 in {1 / kept:.3g} draws: "
            f"drop_zero=True would draw about {n_samples / kept:.3g} samples in {1 / kept:.3g} rounds of "
            f"n_samples={n_samples} (at most {MAX_DRAWS:.0e} samples and {MAX_ROUNDS:.0e} rounds are drawn); use a "
            f"larger p_active, or drop_zero=False"
        )
    rows: list[Tensor] = []
    have = 0
    while have < n_samples:
        active = torch.rand(n_samples, n_features, generator=generator) < p_active
        values = low + (high - low) * torch.rand(n_samples, n_features, generator=generator)
        x = values * active
        x = x[active.any(1)] if drop_zero else x
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
    compile: bool = False,
    progress: bool = True,
    threads: int | None = None,
) -> list[float]:
    """Fit `model` to targets by MSE with AdamW; returns the mean loss of every epoch."""
    return train_toys([model], [inputs], [targets], epochs, batch_size, lr, weight_decay, [seed], compile, progress,
                      threads)[0]


def train_toys(
    models: Sequence[nn.Module],
    inputs: Sequence[Tensor],
    targets: Sequence[Tensor],
    epochs: int = 1000,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    seeds: Sequence[int] | None = None,
    compile: bool = False,
    progress: bool = True,
    threads: int | None = None,
    on_divergence: str = "raise",
) -> list[list[float]]:
    """Fit M models of one architecture, each to its own data set, at once; returns each model's epoch losses.

    Model m sees its own inputs[m] in its own shuffled order (seeds[m]) in batches of `batch_size`, with the
    MSE loss Σ_out (f(x) − y)² averaged over the batch and AdamW, exactly as if trained alone: the models'
    weights are stacked along a new leading dimension, the forward is vmapped, and AdamW is elementwise.
    Training many small models together costs about as much per step as training one. `compile=True`
    compiles the gradient computation with torch.compile (a few seconds up front, ~3× faster steps).
    threads: CPU threads during training, as for `l3d.fit` (None: the default for M × batch_size × parameters
    per model, l3d.runtime.threads).

    A model diverges when an epoch's mean loss, or a weight at the end, is not finite (checked once per epoch).
    on_divergence="raise": FloatingPointError naming the model, its seed and the epoch, as soon as it happens;
    "continue": the others train on (each model's training is independent of the others'), and the diverged
    model's losses are not finite from that epoch on (the last one, NaN, when only its weights are).
    """
    if on_divergence not in ("raise", "continue"):
        raise ValueError(f"on_divergence must be 'raise' or 'continue', got {on_divergence!r}")
    M = len(models)
    if not (M == len(inputs) == len(targets)) or M == 0:
        raise ValueError(f"need one inputs and one targets tensor per model, got {M} models, "
                         f"{len(inputs)} inputs and {len(targets)} targets")
    n = inputs[0].shape[0]
    if any(x.shape[0] != n for x in [*inputs, *targets]):
        raise ValueError(f"every model needs the same number of samples, got {[x.shape[0] for x in inputs]}")
    seeds = list(range(M)) if seeds is None else list(seeds)
    if len(seeds) != M:
        raise ValueError(f"need one seed per model, got {len(seeds)} seeds for {M} models")
    work = M * batch_size * sum(p.numel() for p in models[0].parameters())
    with threads_for(work, threads):
        return _train_stacked(models, inputs, targets, epochs, batch_size, lr, weight_decay, seeds, compile, progress,
                              n, on_divergence == "raise")


def _diverged(m: int, seed: int, epoch: int, epochs: int, loss: float, lr: float, compile: bool) -> FloatingPointError:
    what = f"its mean training loss is {loss}" if not math.isfinite(loss) else "its weights are not finite"
    return FloatingPointError(
        f"toy model {m} (batch-order seed {seed}) diverged in epoch {epoch + 1} of {epochs}: {what} (lr {lr}"
        f"{', compiled step' if compile else ''}). A smaller lr trains it; with several initializations per seed "
        f"(train_toys_best_of) a diverged one is dropped when another is finite")


def _train_stacked(models, inputs, targets, epochs, batch_size, lr, weight_decay, seeds, compile, progress, n,
                   raise_on_divergence=True):
    M = len(models)
    params, buffers = stack_module_state(list(models))   # name -> (M, *shape)
    template = copy.deepcopy(models[0]).to("meta")
    X, Y = torch.stack(list(inputs)), torch.stack(list(targets))   # (M, n, in), (M, n, out)

    def model_loss(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return (functional_call(template, (p, b), (x,)) - y).pow(2).sum(-1).mean()

    def total_loss(p: dict[str, Tensor], x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        losses = vmap(model_loss)(p, buffers, x, y)   # (M,)
        return losses.sum(), losses.detach()

    def step_grads(p: dict[str, Tensor], x: Tensor, y: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        total, losses = total_loss(p, x, y)   # autograd: cheaper than torch.func.grad when not compiled
        return dict(zip(p, torch.autograd.grad(total, list(p.values())))), losses

    compiled = torch.compile(grad(total_loss, has_aux=True), dynamic=False) if compile else step_grads
    optimizer = torch.optim.AdamW(list(params.values()), lr=lr, weight_decay=weight_decay)
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    rows = torch.arange(M, device=X.device)[:, None]
    history = torch.zeros(epochs, M)
    bar = tqdm(range(epochs), desc=f"train {M} toy model{'s' * (M > 1)}", disable=not progress)
    for epoch in bar:
        order = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(X.device)   # (M, n)
        total = torch.zeros(M, device=X.device)
        for idx in order.split(batch_size, dim=1):
            compute = compiled if idx.shape[1] == batch_size else step_grads
            grads, losses = compute(params, X[rows, idx], Y[rows, idx])
            for name, p in params.items():
                p.grad = grads[name]
            optimizer.step()
            total += losses * idx.shape[1]
        history[epoch] = total.cpu() / n
        if raise_on_divergence and not torch.isfinite(history[epoch]).all():   # M numbers once an epoch: cheap
            m = int(torch.nonzero(~torch.isfinite(history[epoch]))[0])
            raise _diverged(m, seeds[m], epoch, epochs, history[epoch, m].item(), lr, compile)
        bar.set_postfix(loss=f"{history[epoch].mean():.4g}", refresh=False)   # shown at the bar's next (timed) refresh
    finite = torch.stack([torch.isfinite(p).flatten(1).all(1) for p in params.values()]).all(0).cpu()   # (M,)
    for m in torch.nonzero(~finite & torch.isfinite(history[-1])).flatten().tolist():   # only the last step broke it
        if raise_on_divergence:
            raise _diverged(m, seeds[m], epochs - 1, epochs, history[-1, m].item(), lr, compile)
        history[-1, m] = math.nan
    with torch.no_grad():
        for m, model in enumerate(models):
            for name, p in model.named_parameters():
                p.copy_(params[name][m])
    return history.T.tolist()


def train_toys_best_of(
    build: Callable[[], nn.Module],
    data: Sequence[tuple[Tensor, Tensor]],
    seeds: Sequence[int],
    restarts: int = 1,
    **train_options,
) -> tuple[list[nn.Module], list[list[float]]]:
    """One trained model per seed: the best of `restarts` initializations, judged by final training loss.

    For seed s, `torch.manual_seed(s)` and then `build()` `restarts` times give the initializations
    (the first is the plain single-run model of that seed); all are trained together (`train_toys`) on
    data[s's index] = (inputs, targets), each in its own batch order. Small models sometimes get stuck
    with a feature left out; keeping the lowest-loss restart avoids that without looking at the features.
    A diverged initialization (`train_toys`) is dropped with a warning naming the seed, the initialization and
    the epoch when another of its seed is finite; FloatingPointError when all of a seed's diverged.
    Returns the kept models and their epoch losses.
    """
    if restarts < 1:
        raise ValueError(f"restarts must be at least 1, got {restarts}")
    if len(data) != len(seeds):
        raise ValueError(f"need one (inputs, targets) pair per seed, got {len(data)} for {len(seeds)} seeds")
    models, inputs, targets, orders = [], [], [], []
    for s, (x, y) in zip(seeds, data):
        torch.manual_seed(s)
        for r in range(restarts):
            models.append(build().to(x.device))
            inputs.append(x)
            targets.append(y)
            orders.append(s + 1_000_003 * r)
    losses = train_toys(models, inputs, targets, seeds=orders, on_divergence="continue", **train_options)
    best = []
    for i, s in enumerate(seeds):
        starts = range(i * restarts, (i + 1) * restarts)
        broke = {m - i * restarts: next(e for e, v in enumerate(losses[m]) if not math.isfinite(v))
                 for m in starts if not all(math.isfinite(v) for v in losses[m])}   # initialization -> first bad epoch
        said = ", ".join(f"initialization {r} in epoch {e + 1}" for r, e in broke.items())
        if len(broke) == restarts:
            raise FloatingPointError(f"every toy model of seed {s} diverged: {said} of {len(losses[starts[0]])} (the "
                                     f"mean training loss is not finite). A smaller lr trains it")
        if broke:
            warnings.warn(f"seed {s}: {said} diverged (mean training loss not finite); dropped, the best of the "
                          f"other {restarts - len(broke)} kept", RuntimeWarning, stacklevel=2)
        best.append(min((m for m in starts if m - i * restarts not in broke), key=lambda m: losses[m][-1]))
    return [models[m] for m in best], [losses[m] for m in best]


def tms_feature_match(model: TMS, directions: dict[str, Tensor]) -> dict[str, Tensor | list]:
    """Match each TMS feature to a distinct subnetwork through the subnetworks' W_in components.

    The hidden-space direction of subnetwork k for feature i is column i of its W_in component, the
    counterpart of the feature's embedding W_in[:, i]. Features and subnetworks are matched one-to-one
    (`ground_truth.match`) on |cos| times the share of the component's norm in column i, so a subnetwork
    counts for a feature only when it is both parallel to the embedding and concentrated on it.

    directions: name -> (C, *shape) with at least "W_in" (C, n_hidden, n_features).
    Returns pairs [(feature, subnetwork)], cosines (|cos| of each pair), and the (F, C) matrices cos and share.
    """
    embedding = model.W_in.detach()                       # (H, F)
    columns = directions["W_in"].detach().transpose(1, 2)  # (C, F, H)
    cos = torch.nn.functional.cosine_similarity(columns, embedding.T.unsqueeze(0), dim=-1, eps=1e-12).abs().T
    share = (columns.norm(dim=-1) / columns.flatten(1).norm(dim=1, keepdim=True).clamp_min(1e-30)).T   # (F, C)
    pairs = match(cos * share)
    return {"pairs": pairs, "cosines": [cos[i, k].item() for i, k in pairs], "cos": cos, "share": share}


def group_features(
    n_samples: int,
    n_groups: int,
    group_size: int,
    p_active: float = 0.05,
    low: float = 0.0,
    high: float = 1.0,
    generator: torch.Generator | None = None,
    drop_zero: bool = True,
) -> Tensor:
    """Samples whose features switch on and off in groups: group g is active with probability p_active,
    and then all its `group_size` features are uniform on [low, high]. drop_zero: all-zero samples are
    dropped (and replaced), as for toy training; False keeps them (about (1 − p_active)^n_groups of the samples).

    Returns (n_samples, n_groups * group_size); features g*group_size … (g+1)*group_size − 1 form group g.
    """
    # (N, n_groups)
    groups = sparse_features(n_samples, n_groups, p_active, generator=generator, drop_zero=drop_zero) > 0
    values = low + (high - low) * torch.rand(n_samples, n_groups * group_size, generator=generator)
    return values * groups.repeat_interleave(group_size, dim=1)


def feature_groups(n_groups: int, group_size: int) -> list[list[int]]:
    """The features of each group as `group_features` lays them out."""
    return [list(range(g * group_size, (g + 1) * group_size)) for g in range(n_groups)]


def random_coefficients(n_out: int, n_in: int, high: float = 3.0, generator: torch.Generator | None = None) -> Tensor:
    """A coefficient matrix with entries uniform on [0, high]: (n_out, n_in)."""
    return high * torch.rand(n_out, n_in, generator=generator)


def identity(x: Tensor) -> Tensor:
    """x itself: a layer without activation."""
    return x


class MLP(nn.Module):
    """Fully connected network `sizes[0] → … → sizes[-1]`: `activation` after every layer but the last,
    `output_activation` after the last; `hidden_bias=False` leaves every layer but the last without a bias.

    Parameters are named layers.{i}.weight (out, in) and layers.{i}.bias (out,).
    """

    ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
        "relu": nn.functional.relu, "gelu": nn.functional.gelu, "elu": nn.functional.elu, "identity": identity,
    }

    def __init__(self, sizes: list[int], activation: str = "relu", output_activation: str = "identity",
                 hidden_bias: bool = True):
        super().__init__()
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"sizes must list at least an input and an output width, all ≥ 1; got {sizes}")
        for name in (activation, output_activation):
            if name not in self.ACTIVATIONS:
                raise ValueError(f"unknown activation {name!r}: use one of {sorted(self.ACTIVATIONS)}")
        self.sizes = list(sizes)
        self.activation = self.ACTIVATIONS[activation]
        self.output_activation = self.ACTIVATIONS[output_activation]
        last = len(sizes) - 2
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=hidden_bias or i == last)
                                    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.output_activation(self.layers[-1](x))


VARIANTS = ("authors", "paper_text")


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown toy variant {variant!r}: use one of {VARIANTS}")


def _linear_hidden_relu_output(n_in: int, n_hidden: int, n_out: int) -> MLP:
    """The authors' one-hidden-layer toy (their `SingleHiddenLayerPerceptron`, toy_models/tms.py):
    y = ReLU(W_outᵀ W_inᵀ x + b), a linear hidden layer without bias, bias and ReLU on the output, every
    weight drawn from N(0, 1) and b = 0. Their W_in (n_in, n_hidden) and W_out (n_hidden, n_out) are our
    layers.0.weight and layers.1.weight transposed (nn.Linear's (out, in)); their b is layers.1.bias."""
    model = MLP([n_in, n_hidden, n_out], "identity", "relu", hidden_bias=False)
    with torch.no_grad():
        for layer in model.layers:
            layer.weight.normal_()
        model.layers[-1].bias.zero_()
    return model


def circuit_superposition(n_features: int = 10, n_hidden: int = 5, variant: str = "paper_text") -> MLP:
    """Toy model of circuit superposition (TMCS), n_features → n_hidden → n_features, fit to x ↦ A x.

    paper_text: a ReLU hidden layer with biases and a linear output (the paper's text).
    authors: a linear hidden layer without bias and ReLU(· + b) on the output (the authors' code, which
    made the paper's figures; see `_linear_hidden_relu_output`).
    """
    _check_variant(variant)
    if variant == "authors":
        return _linear_hidden_relu_output(n_features, n_hidden, n_features)
    return MLP([n_features, n_hidden, n_features], "relu")


def high_rank_circuits(n_features: int | None = None, n_hidden: int = 10, variant: str = "paper_text") -> MLP:
    """Higher-rank circuits: n_features (in groups) → n_hidden → n_features, fit to x ↦ A x; the two
    variants as in `circuit_superposition`. n_features None: the paper's text has 25 inputs in 5 groups
    of 5, the authors' scripts and figures 30 in 6 groups of 5."""
    _check_variant(variant)
    if variant == "authors":
        n_features = n_features or 30
        return _linear_hidden_relu_output(n_features, n_hidden, n_features)
    n_features = n_features or 25
    return MLP([n_features, n_hidden, n_features], "relu")


def square_mlp(n_features: int = 5, width: int | None = None, depth: int = 4, variant: str = "paper_text") -> MLP:
    """Complex loss landscape: n_features → depth hidden layers of `width` → n_features, fit to x ↦ x².

    paper_text: GeLU between layers, linear output, PyTorch's default initialization, width 5.
    authors (their `CustomMLP`, toy_models/parallel_serial_network.py): ELU after every layer including
    the output, weights He-normal N(0, 2 / fan_in), biases U(0.01, 1), width 10.
    width None: the variant's width.
    """
    _check_variant(variant)
    if variant == "paper_text":
        return MLP([n_features, *[width or 5] * depth, n_features], "gelu")
    model = MLP([n_features, *[width or 10] * depth, n_features], "elu", "elu")
    with torch.no_grad():
        for layer in model.layers:
            nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
            nn.init.uniform_(layer.bias, 0.01, 1.0)
    return model


TOYS: dict[str, Callable[..., MLP]] = {
    "tmcs": circuit_superposition, "high_rank": high_rank_circuits, "square": square_mlp,
}


def build(kind: str, variant: str = "authors", **sizes: int) -> MLP:
    """A fresh (untrained) toy: kind "tmcs", "high_rank" or "square", variant "authors" or "paper_text";
    `sizes` go to the kind's constructor (`circuit_superposition`, `high_rank_circuits`, `square_mlp`)."""
    if kind not in TOYS:
        raise ValueError(f"unknown toy {kind!r}: use one of {sorted(TOYS)}")
    return TOYS[kind](**sizes, variant=variant)


def weight_bias_ranks(shapes: dict[str, tuple[int, ...]], weight: int, bias: int) -> dict[str, int]:
    """A Tucker rank per tensor for `Decomposition(rank=...)`: `bias` for vectors, `weight` for the others
    (the authors' x² run: weight 2, bias 1)."""
    return {name: bias if len(shape) == 1 else weight for name, shape in shapes.items()}


@dataclass(frozen=True)
class Conventions:
    """How a toy is trained and its L3D samples drawn and decomposed (the toy notebooks' settings,
    `toy_experiment.VariantExperiment.conventions`, read them for toy="authors").

    toy_weight_decay: AdamW weight decay of toy training (lr 1e-3 without decay, 1000 epochs, 10,000 samples
        without all-zero inputs, as the notebooks train every toy).
    toy_batch_size: samples per toy training step.
    drop_zero_inputs: the L3D samples have no all-zero input.
    divergence, reference: `L3DConfig`'s settings of the same names; reference_pool: where references are drawn
        from, "samples" (every L3D sample: one gradient pass per epoch) or "batch" (the same batch, as the authors'
        code).
    warm_start_epochs: per toy kind, epochs at top_k = 1 before BatchTopK.
    decoder_norm: `L3DConfig.decoder_norm`, how the decoder directions are scaled after every step.
    """

    toy_weight_decay: float
    toy_batch_size: int
    drop_zero_inputs: bool
    divergence: str
    reference: str
    reference_pool: str
    warm_start_epochs: dict[str, int]
    decoder_norm: str


# The authors' code at their scripts' .sh settings. Toys: AdamW weight decay 1e-3 (toy_models/trainer.py), batch 32
# in each of the 4 processes the toy .sh files start (torchrun --nproc-per-node=4, DDP with a distributed sampler: a
# global batch of 128, 79 steps per epoch). L3D: samples from GenerateTMSInputs / GenerateCorrelatedData, which drop
# all-zero rows (toy_models/data.py); MSEVectorLoss (utils/loss.py) with the reference drawn with replacement from
# the same batch of 32; top_k ≈ 1 while `epoch <= warm_start_epochs` (eigenmodel/trainer.py), so their flags 1
# (TMCS), none (high-rank: 0) and 10 (x²) keep every coefficient for 2, 1 and 11 epochs. After every step
# `normalize_low_ranks` (eigenmodel/eigenmodel.py) divides each subnetwork by the square root of Σ_t ‖d_t‖ over
# its tensors, which drives Σ_t ‖d_t‖ to 1 ("sum"), not Σ_t ‖d_t‖² as the text's unit norm.
# The paper_text toys' conventions are our earlier choices (`VariantExperiment.conventions`).
AUTHORS_CONVENTIONS = Conventions(
    toy_weight_decay=1e-3, toy_batch_size=128, drop_zero_inputs=True, divergence="output_times_residual",
    reference="random_or_self", reference_pool="batch", warm_start_epochs={"tmcs": 2, "high_rank": 1, "square": 11},
    decoder_norm="sum",
)
