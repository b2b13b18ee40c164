"""Per-sample gradients of several models of one architecture in one vectorized pass.

A sweep trains decompositions of several toys at once (`l3d.sweep`: one toy per seed, and perturbed copies of it).
Each toy's gradients of a chunk are one vmap over its samples, which on a tiny model costs a fixed few milliseconds
whatever its size; G toys are G such passes. `JointPool` batches them: every source of the sweep posts its chunk's
inputs and references (`request`) and gets a `Pending` chunk back; the first time one is read, a single vmap over
the G models (their weights stacked, `torch.func.stack_module_state`) computes every chunk posted so far,

    g[m, i] = ∇_{W_m} D(f(x_{m,i}; W_m), y_ref{m,i})        m: model, i: sample,

the same numbers as G separate passes up to floating-point rounding. It serves collectors that materialize their
gradients (no factored tensors) of models with the same parameters and buffers (names and shapes), one output row
per item (not sequences), one divergence and one forward (`joinable`).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.func import grad, stack_module_state, vmap

from ..divergences import divergence
from .collector import GradientCollector, call_with, evaluating
from .dense import DenseGradients


def joinable(collectors: Sequence[GradientCollector]) -> bool:
    """Whether `JointPool` can compute these collectors' gradients in one pass (see the module docstring)."""
    first = collectors[0]

    def form(c: GradientCollector) -> tuple:
        state = tuple((n, tuple(t.shape), t.dtype) for n, t in c.model.state_dict().items())
        return (type(c.model), state, tuple(c.names), c.divergence, c.forward, c.sequence, c.device)

    return (len(collectors) > 1 and all(not c.plan and not c.sequence for c in collectors)
            and all(form(c) == form(first) for c in collectors))


class Pending:
    """A chunk's per-sample gradients, or some rows of them, computed when first read (`dense`)."""

    def __init__(self, pool: JointPool, key: int, rows: slice | Tensor | None = None):
        self._pool, self._key, self._rows = pool, key, rows
        size = pool.sizes[key]
        if rows is None:
            self.n_samples = size
        elif isinstance(rows, slice):
            self.n_samples = len(range(*rows.indices(size)))
        else:
            self.n_samples = len(torch.arange(size)[rows])

    def __getitem__(self, rows: slice | Tensor) -> Pending:
        """Rows of these gradients (of the chunk's rows so far)."""
        if self._rows is None:
            return Pending(self._pool, self._key, rows)
        return Pending(self._pool, self._key, torch.arange(self._pool.sizes[self._key])[self._rows][rows])

    def dense(self) -> DenseGradients:
        whole = self._pool.result(self._key)
        return whole if self._rows is None else whole[self._rows]

    def flat(self) -> Tensor:
        return self.dense().flat()

    def sq_norms(self) -> Tensor:
        return self.dense().sq_norms()

    def project(self, directions) -> Tensor:
        return self.dense().project(directions)

    @property
    def grads(self) -> dict[str, Tensor]:
        return self.dense().grads


class JointPool:
    """Collects the chunks the sources of one sweep ask gradients for, and computes all that are waiting in one pass."""

    def __init__(self, collectors: Sequence[GradientCollector]):
        if not joinable(collectors):
            raise ValueError("these collectors cannot share a pass: they need dense gradients of models with the same "
                             "parameters, one output row per item, and one divergence and forward")
        self.collectors = list(collectors)
        self.sizes: dict[int, int] = {}
        self._waiting: dict[int, tuple[GradientCollector, Tensor, Tensor]] = {}
        self._done: dict[int, DenseGradients] = {}
        self._next = 0

    def request(self, collector: GradientCollector, inputs: Tensor, references: Tensor) -> Pending:
        """Post a chunk (inputs (N, ...) and their references (N, out)); its gradients come when first read."""
        key, self._next = self._next, self._next + 1
        self._waiting[key] = (collector, inputs, references)
        self.sizes[key] = inputs.shape[0]
        return Pending(self, key)

    def result(self, key: int) -> DenseGradients:
        if key not in self._done:
            self._compute()
        return self._done[key]

    def _compute(self) -> None:
        """Every waiting chunk's gradients: one vmap over the models for each group of chunks of one size."""
        by_size: dict[int, list[int]] = {}
        for key, (_, inputs, _) in self._waiting.items():
            by_size.setdefault(inputs.shape[0], []).append(key)
        for keys in by_size.values():
            chunks = [self._waiting.pop(k) for k in keys]
            for key, grads in zip(keys, _joint(chunks)):
                self._done[key] = grads


def _joint(chunks: list[tuple[GradientCollector, Tensor, Tensor]]) -> list[DenseGradients]:
    """The per-sample gradients of every (collector, inputs, references), one vmap over the models."""
    template = chunks[0][0]
    names = template.names
    params, buffers = stack_module_state([c.model for c, _, _ in chunks])
    weights = {n: params.pop(n).detach() for n in names}                   # name -> (G, *shape)
    rest = {**{n: p.detach() for n, p in params.items()}, **buffers}      # the other parameters and buffers
    inputs = torch.stack([x for _, x, _ in chunks])                       # (G, N, ...)
    references = torch.stack([r for _, _, r in chunks])                   # (G, N, out)

    def item_divergence(w: dict, others: dict, x: Tensor, ref: Tensor) -> Tensor:
        out = call_with(template.model, {**others, **w}, x.unsqueeze(0), template.forward).squeeze(0)
        return divergence(out, ref, template.divergence)

    per_sample = vmap(grad(item_divergence), in_dims=(None, None, 0, 0))
    with evaluating(template.model), torch.no_grad():
        grads = vmap(per_sample, in_dims=(0, 0, 0, 0))(weights, rest, inputs, references)   # name -> (G, N, *shape)
    flat = torch.cat([grads[n].flatten(2) for n in names], dim=2)                          # (G, N, n_w)
    sq_norms = torch.linalg.vecdot(flat, flat)                                             # (G, N)
    shapes = {n: tuple(grads[n].shape[2:]) for n in names}
    return [DenseGradients.from_flat(flat[m], sq_norms[m], shapes) for m in range(len(chunks))]
