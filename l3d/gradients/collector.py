"""Per-sample divergence gradients g_i = ∇_W D(f(x_i; W), y_ref) at W = W0, for any nn.Module.

The model runs in eval mode during every call (`evaluating`: each module's own mode is given back after it; `calls`
holds how the model is called). What the factored engine needs is learned on the first forward of every input shape
(`discovery`). The first call checks the gradients against plain autograd on a few samples (`selfcheck`).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import grad, jacrev, vmap

from ..divergences import DIVERGENCE_RENAMES, DIVERGENCES, REFERENCES, divergence, reference_outputs
from ..params import select_tensors
from ..runtime.validate import as_int, renamed
from .calls import call_with, check_inputs, checked_outputs, default_forward, evaluating, output_tensor
from .dense import DenseGradients
from .discovery import discover, plan_modules
from .factored import DensePart, FactoredGradients, build_parts, capture_input, factorable
from .selfcheck import (
    PROBE_ITEMS,
    PROBE_SEQUENCE_ITEMS,
    autograd_gradients,
    hook_suspects,
    probe_positions,
    probe_references,
    relative_errors,
    tolerance,
)

ENGINES = ("auto", "dense", "factored")


def _checked_settings(divergence: str, reference: str, sequence: bool, engine: str, gradient_chunk_size: int,
                      chunk_size: int | None) -> tuple[str, int]:
    """The settings of `GradientCollector` that need no model, checked: a TypeError or ValueError naming the one
    that is wrong. Returns the divergence by its current name and gradient_chunk_size, also read from its old name
    chunk_size (with a DeprecationWarning); its value is checked once the tensors are chosen."""
    if chunk_size is not None:   # the old name of gradient_chunk_size
        if gradient_chunk_size not in (256, chunk_size):
            raise TypeError(f"give gradient_chunk_size alone, not also its old name chunk_size (got "
                            f"{gradient_chunk_size!r} and {chunk_size!r})")
        warnings.warn("GradientCollector(chunk_size=...) is deprecated, renamed gradient_chunk_size: items per "
                      "vectorized gradient computation", DeprecationWarning, stacklevel=3)
        gradient_chunk_size = chunk_size
    divergence = renamed("divergence", divergence, DIVERGENCE_RENAMES, stacklevel=4)
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}: use one of {DIVERGENCES}")
    if reference not in REFERENCES:
        raise ValueError(f"unknown reference {reference!r}: use one of {REFERENCES}")
    if reference == "uniform" and divergence != "kl":
        raise ValueError("reference='uniform' needs divergence='kl' (a uniform distribution over outputs)")
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: use one of {ENGINES}")
    if not isinstance(sequence, bool):
        raise TypeError(f"sequence must be True (outputs (items, positions, out), every position a sample) "
                        f"or False (outputs (items, out)), got {sequence!r}")
    return divergence, gradient_chunk_size


class GradientCollector:
    """Computes per-sample divergence gradients for the chosen tensors of `model`.

    Args:
        model: the trained model; gradients are taken at its current weights, in eval mode (every call
            switches it to eval mode and gives each module its own mode back afterwards).
        tensors: parameter names or globs to decompose.
        divergence: "mse" (regression outputs, the paper's text), "output_times_residual" (the authors' code's
            variant, gradient Jᵀ(2f − f_ref)/n_out; see `l3d.divergences.divergence`; formerly "mse_authors") or
            "kl" (logits).
        reference: "random" (another sample's output, the paper's choice), "random_or_self" (any sample's,
            itself included: the authors' code), "mean" or "uniform".
        sequence: outputs are (batch, positions, out) and every position is a sample; otherwise (batch, out).
        forward: maps (model, inputs) to output tensor (e.g. ``lambda m, x: m(x).logits``); it must be
            deterministic (no dropout in training mode, no random numbers).
        gradient_chunk_size: items per vectorized gradient computation, bounding memory (`L3DConfig`'s setting of
            the same name; not `GradientSource`'s chunk_size, the items of one gradient pass). The old keyword
            chunk_size is still read, with a DeprecationWarning.
        engine: "dense" materializes every per-sample gradient (vmap of grad); "factored" keeps the
            gradients of Linear, Conv1d/2d, Embedding and LayerNorm tensors as inputs and
            output-gradients (see `l3d.gradients.factored`) and fails for other tensors; "auto" factors what
            it can and computes the rest densely.

    The first call checks the engine (`selfcheck`): on a few samples every chosen tensor's per-sample
    gradients are compared with plain autograd's. A factored tensor that disagrees is computed densely from
    then on, with a warning naming it ("factored": a ValueError naming it); a tensor whose gradients are
    identically zero (it does not affect the output) is named in a warning. `self_check_errors` holds each
    tensor's measured relative error.
    """

    def __init__(
        self,
        model: nn.Module,
        tensors: str | list[str],
        divergence: str = "mse",
        reference: str = "random",
        sequence: bool = False,
        forward: Callable[[nn.Module, Tensor], Tensor] | None = None,
        gradient_chunk_size: int = 256,
        engine: str = "auto",
        *,
        chunk_size: int | None = None,
    ):
        divergence, gradient_chunk_size = _checked_settings(divergence, reference, sequence, engine,
                                                            gradient_chunk_size, chunk_size)
        self.model = model
        self.params = select_tensors(model, tensors)
        meta = [n for n, p in self.params.items() if p.is_meta]
        if meta:
            raise ValueError(
                f"model: the chosen tensors {meta} are on the meta device (shapes without values, e.g. a model "
                "built under torch.device('meta') or with empty weights): load the weights first, e.g. "
                "model.to_empty(device='cpu') and model.load_state_dict(...)"
            )
        self.names = list(self.params)
        self.divergence = divergence
        self.reference = reference
        self.sequence = sequence
        self.forward = forward or default_forward
        self.gradient_chunk_size = as_int("gradient_chunk_size", gradient_chunk_size)
        if self.gradient_chunk_size < 1:
            raise ValueError(f"gradient_chunk_size must be at least 1 (items per vectorized chunk), got "
                             f"{gradient_chunk_size}")
        self.engine = engine
        self.plan = {} if engine == "dense" else factorable(model, self.params)
        if engine == "factored" and len(self.plan) < len(self.names):
            missing = [n for n in self.names if n not in self.plan]
            raise ValueError(
                f"engine='factored' cannot factor {missing} (only weights and biases of Linear, Conv1d, "
                "Conv2d, Embedding and LayerNorm modules that own them alone); use engine='auto'"
            )
        self._call_shapes: dict[tuple, dict] = {}
        # backpropagate once through a position-wise output head (see _vmapped); the benchmark turns it
        # off to reproduce the authors' approach
        self.cut_head = True
        # the self-check's relative error per tensor (see selfcheck), None until the first call
        self.self_check_errors: dict[str, float] | None = None
        self._warnings: list[str] = []     # said when the call returns

    @property
    def chunk_size(self) -> int:
        """Deprecated: the old name of `gradient_chunk_size`."""
        warnings.warn("GradientCollector.chunk_size is deprecated, renamed gradient_chunk_size", DeprecationWarning,
                      stacklevel=2)
        return self.gradient_chunk_size

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(p.shape) for name, p in self.params.items()}

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.params.values())).dtype

    def work(self, inputs: Tensor) -> int:
        """Per-sample gradient entries of `inputs`: samples (items × positions for sequence models) × decomposed
        parameters. L3D's calls pick their CPU threads by it (l3d.runtime.threads)."""
        check_inputs(inputs)
        positions = inputs.shape[1] if self.sequence and inputs.dim() > 1 else 1
        return inputs.shape[0] * positions * sum(math.prod(shape) for shape in self.shapes.values())

    @torch.no_grad()
    def outputs(self, inputs: Tensor) -> Tensor:
        """Model outputs of `inputs` (items, …) with samples along dim 0: (N, out), positions flattened for
        sequences."""
        check_inputs(inputs)
        chunks = []
        with evaluating(self.model):
            for x in inputs.split(self.gradient_chunk_size):
                chunks.append(checked_outputs(output_tensor(self.forward(self.model, x)), x.shape[0], self.sequence))
        out = torch.cat(chunks)
        return out.flatten(0, 1) if self.sequence else out

    def references(self, inputs: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Reference outputs for every sample of `inputs`, drawn within this batch: (N, out)."""
        return reference_outputs(self.outputs(inputs), self.divergence, self.reference, generator)

    def __call__(
        self, inputs: Tensor, references: Tensor | None = None, generator: torch.Generator | None = None
    ) -> DenseGradients | FactoredGradients:
        """Per-sample gradients of the divergence at `inputs` (items, …) to `references` ((samples, out); drawn
        fresh when not given): (samples, *shape) per chosen tensor, dense or factored."""
        check_inputs(inputs)
        try:
            with evaluating(self.model):
                if references is None:
                    references = self.references(inputs, generator)
                self._check_references(inputs, references)
                zero = self._self_check(inputs) if self.self_check_errors is None else []
                grads = self._gradients(inputs, references)
                if zero:
                    self._warn_zero(grads, zero)
        finally:
            for message in self._warnings:
                warnings.warn(f"GradientCollector: {message}", stacklevel=2)
            self._warnings.clear()
        return grads

    # --- checks ---------------------------------------------------------------------------------------
    def _check_references(self, inputs: Tensor, references: Tensor) -> None:
        out = self._discover(inputs)["out_shape"]          # one item's outputs: ([positions,] out)
        samples = inputs.shape[0] * (out[0] if self.sequence else 1)
        fits = isinstance(references, Tensor) and references.shape[-1:] == out[-1:]
        if not fits or references.numel() != samples * out[-1]:
            got = tuple(references.shape) if isinstance(references, Tensor) else type(references).__name__
            raise ValueError(f"references must be one output per sample, ({samples}, {out[-1]}) for these "
                             f"{inputs.shape[0]} items, got {got}")

    def _self_check(self, inputs: Tensor) -> list[str]:
        """Compare every tensor's per-sample gradients of a few samples with plain autograd's (selfcheck); a
        factored tensor that disagrees goes to the dense path with a warning ("factored": a ValueError). Sets
        `self_check_errors`; returns the tensors whose gradients were identically zero on these samples."""
        seq = self.sequence
        items = inputs[: PROBE_SEQUENCE_ITEMS if seq else PROBE_ITEMS]
        references = probe_references(self.outputs(items))
        per_item = references.shape[0] // items.shape[0]
        positions = probe_positions(per_item) if seq else None
        index = torch.tensor([b * per_item + t for b in range(items.shape[0]) for t in (positions or [0])],
                             device=self.device)
        want = autograd_gradients(
            lambda w, x: call_with(self.model, w, x, self.forward), self.params, items, references,
            self.divergence, positions)
        rtol = tolerance(self.dtype, self.device)
        while True:
            got = self._gradients(items, references)[index].dense().grads
            errors = relative_errors(got, want, rtol)
            bad = {n: e for n, e in errors.items() if not e <= rtol}
            if not bad:
                break
            what = (f"differ from autograd's by {{:.2g}} (relative, on {len(index)} samples; tolerance {rtol:.2g} "
                    f"for {self.dtype})")
            factored = {n: f"its factored per-sample gradients {what.format(e)}"
                           f"{hook_suspects(self.model, self.plan[n][0])}"
                        for n, e in bad.items() if n in self.plan}
            # the head's shortcut serves every tensor: suspect it first when a dense one fails, or all do
            if self.cut_head and self._head(items) is not None and (len(factored) < len(bad) or len(bad) == len(want)):
                self._warnings.append(f"per-sample gradients through the output head's shortcut "
                                      f"{what.format(max(bad.values()))}; backpropagating through the head at every "
                                      f"position instead")
                self.cut_head = False
            elif factored:
                self._fall_back(factored)
            else:
                raise ValueError(
                    f"the per-sample gradients of {sorted(bad)}, computed vectorized (vmap of grad), "
                    f"{what.format(max(bad.values()))} computed one sample at a time: model/forward must compute "
                    "every item the same way alone and vectorized, keep no state between calls and be deterministic"
                )
        self.self_check_errors = errors
        return [n for n in self.names if not want[n].any()]

    def _fall_back(self, reasons: dict[str, str]) -> None:
        """Compute the tensors `reasons` names densely, with a warning ("auto"), or refuse ("factored")."""
        if self.engine == "factored":
            raise ValueError(f"engine='factored' cannot factor {list(reasons)}: "
                             + "; ".join(f"{name!r}: {why}" for name, why in reasons.items())
                             + "; use engine='auto' (computes them densely) or engine='dense'")
        for name, why in reasons.items():
            self._warnings.append(f"{name!r} is computed densely (vmap of grad), not factored: {why}")
            del self.plan[name]

    def _warn_zero(self, grads: DenseGradients | FactoredGradients, suspects: list[str]) -> None:
        """Warn about the tensors whose gradients are zero on the probe and on every sample of `grads`."""
        if isinstance(grads, FactoredGradients):
            norms = {n: grads.parts[n].sq_norms() for n in suspects}
        else:
            norms = {n: grads.grads[n].flatten(1).pow(2).sum(1) for n in suspects}
        zero = [n for n in suspects if not norms[n].any()]
        if zero:
            self._warnings.append(
                f"the per-sample gradients of {zero} are identically zero (on all "
                f"{grads.n_samples} samples of the first call, and at random references on the first few): "
                f"{'this tensor does' if len(zero) == 1 else 'these tensors do'} not affect the model's output at "
                f"these inputs; if no input moves {'it' if len(zero) == 1 else 'them'}, a decomposition of "
                f"{'it' if len(zero) == 1 else 'them'} is meaningless: choose tensors the forward uses")

    # --- internals ----------------------------------------------------------------------------------
    def _gradients(self, inputs: Tensor, references: Tensor) -> DenseGradients | FactoredGradients:
        if self.sequence:
            references = references.view(inputs.shape[0], -1, references.shape[-1])
        if self.plan:
            self._prune(self._discover(inputs))
        if self.plan:
            return self._factored(inputs, references)
        weights = {n: p.detach() for n, p in self.params.items()}
        chunks = [self._vmapped({}, weights, x, r)[0][1] for x, r in self._chunks(inputs, references)]
        return DenseGradients({n: self._samples(torch.cat([c[n] for c in chunks])) for n in self.names})

    def _chunks(self, inputs: Tensor, references: Tensor):
        return zip(inputs.split(self.gradient_chunk_size), references.split(self.gradient_chunk_size))

    def _samples(self, g: Tensor) -> Tensor:
        """(items, [positions,] …) -> (samples, …)."""
        return g.flatten(0, 1) if self.sequence else g

    def _vmapped(self, eps: dict, weights: dict[str, Tensor], x: Tensor, r: Tensor):
        """Per item: gradients of the divergence w.r.t. the output perturbations `eps` of hooked
        modules and w.r.t. `weights`, and the hooked modules' captured inputs."""
        modules = {m: self.model.get_submodule(m) for m in eps}
        head = self._head(x) if self.sequence else None

        def item_divergence(eps: dict, w: dict[str, Tensor], x: Tensor, ref: Tensor):
            captured: dict[str, list[Tensor]] = {m: [] for m in modules}
            # first among the module's hooks: the perturbation is added to the raw output, and a user's hook
            # sees (and its gradient flows through) the perturbed output
            handles = [module.register_forward_hook(perturb_output(m, eps, captured), with_kwargs=True, prepend=True)
                       for m, module in modules.items()]
            if head is not None:
                hidden: list[Tensor] = []
                handles.append(head.register_forward_hook(lambda mod, args, out: hidden.append(args[0])))
            try:
                out = call_with(self.model, w, x.unsqueeze(0), self.forward).squeeze(0)
            finally:
                for h in handles:
                    h.remove()
            if head is None:
                return divergence(out, ref, self.divergence), captured
            # position-wise head: D_t depends on the head's input at t only, so with u_t = ∂(Σ_s D_s)/∂h_t
            # (one product, no per-position pass through the head) D_t and <u_t, h_t> have equal gradients
            (h,) = hidden
            g = grad(lambda y: divergence(y, ref, self.divergence).sum())(out.detach())     # (T, out)
            u = g @ head.weight.detach()                                                    # (T, in)
            return (u * h.squeeze(0)).sum(-1), captured

        per_item = (jacrev if self.sequence else grad)(item_divergence, argnums=(0, 1), has_aux=True)
        try:
            with torch.no_grad():   # no graph outside the transforms
                return vmap(per_item, in_dims=(None, None, 0, 0))(eps, weights, x, r)
        except RuntimeError as error:
            if "randomness" not in str(error):
                raise
            raise ValueError(
                "the model's forward draws random numbers (vmap refused a random operation), but per-sample "
                "gradients need a deterministic model/forward: remove random operations from forward (the collector "
                "already runs it in eval mode, which turns nn.Dropout off; F.dropout(x, training=True), "
                "torch.randn and the like stay random)"
            ) from error

    # --- the plan: which tensors are factored --------------------------------------------------------
    def _discover(self, x: Tensor) -> dict:
        """`discovery.discover` for one item of `x`'s shape, once per input shape and dtype."""
        key = (tuple(x.shape[1:]), x.dtype)
        if key not in self._call_shapes:
            self._call_shapes[key] = discover(self.model, self.forward, self.plan, self.params, self.sequence, x)
        return self._call_shapes[key]

    def _head(self, x: Tensor) -> nn.Module | None:
        """The position-wise output head to backpropagate through once, unless a chosen tensor is in it."""
        name = self._discover(x)["head"]
        if name is None or not self.cut_head:
            return None
        head = self.model.get_submodule(name)
        chosen = {id(p) for p in self.params.values()}
        return None if any(id(p) in chosen for p in head.parameters()) else head

    def plan_modules(self) -> dict[str, list[str]]:
        """Module name -> attributes ("weight", "bias") of its chosen tensors, for the factored ones."""
        return plan_modules(self.plan)

    def _prune(self, found: dict) -> None:
        """Take out of the plan what `_discover` found the engine cannot factor: modules never called (their
        weights are used some other way; silently, "factored": refused) and tensors used outside their module's
        forward (with a warning, "factored": refused)."""
        unused = [m for m in self.plan_modules() if not found["calls"].get(m)]
        if unused and self.engine == "factored":
            raise ValueError(
                f"modules {unused} are never called in the forward pass, so their chosen weights are used "
                "some other way (e.g. nn.MultiheadAttention's out_proj); use engine='auto' or 'dense'"
            )
        self.plan = {n: (m, attr) for n, (m, attr) in self.plan.items() if m not in unused}
        outside = {n: f"its value is also used outside the forward of module {self.plan[n][0]!r} (by torch "
                      f"operation {op!r}, as a tied decoder F.linear(h, enc.weight.t()) does), so its gradient is "
                      f"not only the module's input times its output-gradient"
                   for n, op in found["outside"].items() if n in self.plan}
        if outside:
            self._fall_back(outside)

    def _factored(self, inputs: Tensor, references: Tensor) -> FactoredGradients:
        by_module = self.plan_modules()
        shapes = self._discover(inputs)["calls"]
        eps = {m: [torch.zeros(s, dtype=dt, device=self.device) for s, dt in shapes[m]] for m in by_module}
        weights = {n: p.detach() for n, p in self.params.items() if n not in self.plan}
        deltas, dense, captured = [], [], []
        for x, r in self._chunks(inputs, references):
            (d_eps, d_w), cap = self._vmapped(eps, weights, x, r)
            deltas.append(d_eps)
            dense.append(d_w)
            captured.append(cap)
        n_items = inputs.shape[0]
        parts = {n: DensePart(self._samples(torch.cat([d[n] for d in dense]))) for n in weights}
        for m, attrs in by_module.items():
            calls = len(shapes[m])
            module_parts = build_parts(
                self.model.get_submodule(m),
                attrs,
                [torch.cat([c[m][i] for c in captured]) for i in range(calls)],
                [self._samples(torch.cat([d[m][i] for d in deltas])) for i in range(calls)],
                n_items,
            )
            for name, (mm, attr) in self.plan.items():
                if mm == m:
                    parts[name] = module_parts[attr]
        return FactoredGradients({n: parts[n] for n in self.names})


def perturb_output(name: str, eps: dict, captured: dict):
    """Forward hook: record what the module's part needs from its input, add the call's perturbation."""
    def hook(module: nn.Module, args: tuple, kwargs: dict, output: Tensor) -> Tensor:
        calls = captured[name]
        if len(calls) >= len(eps[name]):
            raise RuntimeError(f"module {name} was called more often than when its output shapes were recorded")
        x = args[0] if args else next(iter(kwargs.values()))
        calls.append(capture_input(module, x))
        return output + eps[name][len(calls) - 1]
    return hook
