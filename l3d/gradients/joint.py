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

A chosen weight or bias of an nn.Linear called once per item on one position (`outer_plan`) has the per-sample
gradient δ_{m,i} a_{m,i}ᵀ (weight) or δ_{m,i} (bias), with a the input the module received and δ the gradient of
D at its output: the pass takes δ as the gradient of a zero added to that output and writes the outer product
itself, bit for bit what autograd's per-sample weight gradient is (a product of one number each) without its batched
matrix products of inner dimension 1.
"""
from __future__ import annotations

import math
import weakref
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import grad, stack_module_state, vmap

from ..divergences import divergence
from .collector import GradientCollector, call_with, evaluating, perturb_output
from .dense import DenseGradients, StackedGradients, row_sq_norms
from .discovery import discover
from .factored import factorable

# collector -> its `outer_plan` per item shape and dtype, worked out once (a sweep makes a pool every epoch)
_PLANS: weakref.WeakKeyDictionary[GradientCollector, dict[tuple, dict[str, tuple[str, str]]]] = \
    weakref.WeakKeyDictionary()


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
        self._done: dict[int, tuple[StackedGradients, int]] = {}   # key -> the pass's gradients, the chunk's place
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
        stacked, index = self._done[key]
        return stacked[index]

    def stack(self, batches: Sequence[Pending]) -> StackedGradients | None:
        """The batches as one StackedGradients without a copy, when they are the same rows of the chunks of one
        pass, in the pass's order (every source of a sweep, one batch each); None otherwise."""
        if any(b._key not in self._done for b in batches):
            self._compute()
        stacked, first = self._done[batches[0]._key]
        rows = [slice(None) if b._rows is None else b._rows for b in batches]       # slices, or index tensors
        if (not all(isinstance(r, slice) and r == rows[0] for r in rows)
                or any(self._done[b._key] != (stacked, first + i) for i, b in enumerate(batches))):
            return None
        rows = rows[0]
        groups = slice(first, first + len(batches))
        return StackedGradients(stacked.flat()[groups, rows], stacked.sq_norms()[groups, rows], stacked.shapes)

    def _compute(self) -> None:
        """Every waiting chunk's gradients: one vmap over the models for each group of chunks of one size."""
        by_size: dict[int, list[int]] = {}
        for key, (_, inputs, _) in self._waiting.items():
            by_size.setdefault(inputs.shape[0], []).append(key)
        for keys in by_size.values():
            chunks = [self._waiting.pop(k) for k in keys]
            collector, x, _ = chunks[0]
            plans = _PLANS.setdefault(collector, {})          # of every pool of a sweep: one per epoch
            form = (tuple(x.shape[1:]), x.dtype)
            if form not in plans:
                plans[form] = outer_plan(collector, x)
            stacked = _joint(chunks, plans[form])
            for index, key in enumerate(keys):
                self._done[key] = (stacked, index)


def outer_plan(collector: GradientCollector, x: Tensor) -> dict[str, tuple[str, str]]:
    """The collector's chosen tensors whose per-sample gradient is one outer product (module docstring): tensor name
    -> (module name, "weight" or "bias"), for an nn.Linear (its own forward, not shared, not used outside it) called
    once per item of `x`'s shape with one row of outputs."""
    model = collector.model
    plan = {n: (m, attr) for n, (m, attr) in factorable(model, collector.params).items()
            if isinstance(model.get_submodule(m), nn.Linear)}
    if not plan:
        return {}
    with evaluating(model):
        found = discover(model, collector.forward, plan, collector.params, False, x)
    once = {m for m, calls in found["calls"].items()
            if len(calls) == 1 and math.prod(calls[0][0][1:]) == model.get_submodule(m).out_features}
    return {n: (m, attr) for n, (m, attr) in plan.items() if m in once and n not in found["outside"]}


def _joint(chunks: list[tuple[GradientCollector, Tensor, Tensor]],
           plan: dict[str, tuple[str, str]] | None = None) -> StackedGradients:
    """The per-sample gradients of every (collector, inputs, references), one vmap over the models, in order; the
    tensors of `plan` (`outer_plan`; None: worked out here) as outer products of their module's output-gradient and
    input."""
    template = chunks[0][0]
    names, model = template.names, template.model
    inputs = torch.stack([x for _, x, _ in chunks])                       # (G, N, ...)
    references = torch.stack([r for _, _, r in chunks])                   # (G, N, out)
    plan = outer_plan(template, inputs[0]) if plan is None else plan
    params, buffers = stack_module_state([c.model for c, _, _ in chunks])
    weights = {n: params.pop(n).detach() for n in names if n not in plan}     # name -> (G, *shape)
    rest = {**{n: p.detach() for n, p in params.items()}, **buffers}      # the other parameters and buffers
    modules = sorted({m for m, _ in plan.values()})
    # a zero added to each module's output, (out,) in its weight's dtype (the inputs may be token ids): its gradient
    # is δ
    eps = {m: [torch.zeros_like(model.get_submodule(m).weight[:, 0])] for m in modules}

    def item_divergence(eps: dict, w: dict, others: dict, x: Tensor, ref: Tensor) -> tuple[Tensor, dict]:
        captured: dict[str, list[Tensor]] = {m: [] for m in modules}
        handles = [model.get_submodule(m).register_forward_hook(perturb_output(m, eps, captured), with_kwargs=True,
                                                                prepend=True) for m in modules]
        try:
            out = call_with(model, {**others, **w}, x.unsqueeze(0), template.forward).squeeze(0)
        finally:
            for h in handles:
                h.remove()
        return divergence(out, ref, template.divergence), captured

    per_sample = vmap(grad(item_divergence, argnums=(0, 1), has_aux=True), in_dims=(None, None, None, 0, 0))
    with evaluating(model), torch.no_grad():
        (deltas, grads), captured = vmap(per_sample, in_dims=(None, 0, 0, 0, 0))(eps, weights, rest, inputs,
                                                                                 references)
    G, N = inputs.shape[:2]
    parts = []                                                            # each tensor's gradients: (G, N, size)
    for n in names:
        if n not in plan:
            parts.append(grads[n].flatten(2))
            continue
        m, attr = plan[n]
        delta = deltas[m][0].reshape(G, N, -1)                            # (G, N, out)
        if attr == "bias":
            parts.append(delta)
        else:                                                             # δ aᵀ: (out, in)
            parts.append((delta.unsqueeze(-1) * captured[m][0].reshape(G, N, 1, -1)).flatten(2))
    # one concatenation writes each row once (outer products written straight into their place in a (G, N, n_w)
    # tensor would write every row in short strided pieces, which is slower)
    flat = torch.cat(parts, dim=2)                                        # (G, N, n_w)
    sq_norms = row_sq_norms(flat)                                         # (G, N)
    shapes = {n: tuple(template.params[n].shape) for n in names}
    return StackedGradients(flat, sq_norms, shapes)
