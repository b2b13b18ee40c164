"""Training the toys (spec §4): one trainer for all of them, many models of one architecture at once, each as if
trained alone (`train_toys`), and the best of several initializations per seed (`train_toys_best_of`)."""
from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, stack_module_state, vmap

from ..runtime.progress import tqdm
from ..runtime.threads import threads_for


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

    compiled = torch.compile(grad(total_loss, has_aux=True), dynamic=False) if compile else None
    # every weight in one flat tensor, so that AdamW (elementwise: the same numbers) is a few operations a step;
    # the compiled step reads views of it without autograd's tracking (one graph, no autograd wrapper around it)
    names, shapes = list(params), [p.shape for p in params.values()]
    flat = torch.cat([p.detach().reshape(-1) for p in params.values()]).requires_grad_()
    sizes = [p.numel() for p in params.values()]

    def weights(source: Tensor) -> dict[str, Tensor]:
        return {n: t.view(shape) for n, t, shape in zip(names, source.split(sizes), shapes)}

    detached = weights(flat.detach())
    optimizer = torch.optim.AdamW([flat], lr=lr, weight_decay=weight_decay)
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    rows = torch.arange(M, device=X.device)[:, None]
    history = torch.zeros(epochs, M)
    bar = tqdm(range(epochs), desc=f"train {M} toy model{'s' * (M > 1)}", disable=not progress)
    for epoch in bar:
        order = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(X.device)   # (M, n)
        total = torch.zeros(M, device=X.device)
        for idx in order.split(batch_size, dim=1):
            if compile and idx.shape[1] == batch_size:
                grads, losses = compiled(detached, X[rows, idx], Y[rows, idx])
            else:
                grads, losses = step_grads(weights(flat), X[rows, idx], Y[rows, idx])
            flat.grad = torch.cat([grads[n].reshape(-1) for n in names])
            optimizer.step()
            total += losses * idx.shape[1]
        history[epoch] = total.cpu() / n
        if raise_on_divergence and not torch.isfinite(history[epoch]).all():   # M numbers once an epoch: cheap
            m = int(torch.nonzero(~torch.isfinite(history[epoch]))[0])
            raise _diverged(m, seeds[m], epoch, epochs, history[epoch, m].item(), lr, compile)
        bar.set_postfix(loss=f"{history[epoch].mean():.4g}", refresh=False)   # shown at the bar's next (timed) refresh
    finite = torch.stack([torch.isfinite(p).flatten(1).all(1) for p in detached.values()]).all(0).cpu()   # (M,)
    for m in torch.nonzero(~finite & torch.isfinite(history[-1])).flatten().tolist():   # only the last step broke it
        if raise_on_divergence:
            raise _diverged(m, seeds[m], epochs - 1, epochs, history[-1, m].item(), lr, compile)
        history[-1, m] = math.nan
    with torch.no_grad():
        for m, model in enumerate(models):
            for name, p in model.named_parameters():
                p.copy_(detached[name][m])
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
