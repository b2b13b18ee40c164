"""Per-sample divergence gradients g_i = ∇_W D(f(x_i; W), y_ref) at W = W0, for any nn.Module."""
from __future__ import annotations

from collections.abc import Callable

import math

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jacrev, vmap

from ..divergences import DIVERGENCES, REFERENCES, divergence, reference_outputs
from ..params import select_tensors
from .dense import DenseGradients
from .factored import DensePart, FactoredGradients, build_parts, capture_input, factorable
from ..runtime.validate import as_int


def default_forward(model: nn.Module, x: Tensor) -> Tensor:
    return model(x)


def output_tensor(out: object) -> Tensor:
    """`out` if it is a tensor; a TypeError saying how to pick the tensor out of a tuple or model output otherwise."""
    if isinstance(out, Tensor):
        return out
    raise TypeError(
        f"the model (or forward) returned {type(out).__name__}, not a tensor of outputs: pass forward= to pick "
        f"the tensor, e.g. forward=lambda m, x: m(x)[0] for a tuple, forward=lambda m, x: m(x).logits for a "
        f"Hugging Face model output"
    )


class _ForwardWith(nn.Module):
    def __init__(self, model: nn.Module, forward: Callable[[nn.Module, Tensor], Tensor]):
        super().__init__()
        self.model = model
        self.fn = forward

    def forward(self, x: Tensor) -> Tensor:
        return output_tensor(self.fn(self.model, x))


def call_with(
    model: nn.Module,
    weights: dict[str, Tensor],
    x: Tensor,
    forward: Callable[[nn.Module, Tensor], Tensor] = default_forward,
) -> Tensor:
    """`forward(model, x)` with the named parameters of `model` replaced by `weights` (functionally)."""
    wrapper = _ForwardWith(model, forward)
    return functional_call(wrapper, {f"model.{n}": w for n, w in weights.items()}, (x,), strict=False)


ENGINES = ("auto", "dense", "factored")


class GradientCollector:
    """Computes per-sample divergence gradients for the chosen tensors of `model`.

    Args:
        model: the trained model; gradients are taken at its current weights, in eval mode.
        tensors: parameter names or globs to decompose.
        divergence: "mse" (regression outputs, the paper's text), "mse_authors" (the authors' code's variant,
            gradient Jᵀ(2f − f_ref)/n_out; see `l3d.divergence.divergence`) or "kl" (logits).
        reference: "random" (another sample's output, the paper's choice), "random_or_self" (any sample's,
            itself included: the authors' code), "mean" or "uniform".
        sequence: outputs are (batch, positions, out) and every position is a sample.
        forward: maps (model, inputs) to output tensor (e.g. ``lambda m, x: m(x).logits``).
        chunk_size: items per vectorized chunk, bounding memory.
        engine: "dense" materializes every per-sample gradient (vmap of grad); "factored" keeps the
            gradients of Linear, Conv1d/2d, Embedding and LayerNorm tensors as inputs and
            output-gradients (see `l3d.gradients.factored`) and fails for other tensors; "auto" factors what
            it can and computes the rest densely.
    """

    def __init__(
        self,
        model: nn.Module,
        tensors: str | list[str],
        divergence: str = "mse",
        reference: str = "random",
        sequence: bool = False,
        forward: Callable[[nn.Module, Tensor], Tensor] | None = None,
        chunk_size: int = 256,
        engine: str = "auto",
    ):
        if divergence not in DIVERGENCES:
            raise ValueError(f"unknown divergence {divergence!r}: use one of {DIVERGENCES}")
        if reference not in REFERENCES:
            raise ValueError(f"unknown reference {reference!r}: use one of {REFERENCES}")
        if reference == "uniform" and divergence != "kl":
            raise ValueError("reference='uniform' needs divergence='kl' (a uniform distribution over outputs)")
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}: use one of {ENGINES}")
        self.model = model.eval()
        self.params = select_tensors(model, tensors)
        self.names = list(self.params)
        self.divergence = divergence
        self.reference = reference
        self.sequence = sequence
        self.forward = forward or default_forward
        self.chunk_size = as_int("chunk_size", chunk_size)
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1 (items per vectorized chunk), got {chunk_size}")
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

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(p.shape) for name, p in self.params.items()}

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    def work(self, inputs: Tensor) -> int:
        """Per-sample gradient entries of `inputs`: samples (items × positions for sequence models) × decomposed
        parameters. L3D's calls pick their CPU threads by it (l3d.runtime.threads)."""
        positions = inputs.shape[1] if self.sequence and inputs.dim() > 1 else 1
        return inputs.shape[0] * positions * sum(math.prod(shape) for shape in self.shapes.values())

    @torch.no_grad()
    def outputs(self, inputs: Tensor) -> Tensor:
        """Model outputs with samples along dim 0: (N, out), positions flattened for sequences."""
        out = torch.cat([output_tensor(self.forward(self.model, x)) for x in inputs.split(self.chunk_size)])
        return out.flatten(0, 1) if self.sequence else out

    def references(self, inputs: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Reference outputs for every sample of `inputs`, drawn within this batch: (N, out)."""
        return reference_outputs(self.outputs(inputs), self.divergence, self.reference, generator)

    def __call__(
        self, inputs: Tensor, references: Tensor | None = None, generator: torch.Generator | None = None
    ) -> DenseGradients | FactoredGradients:
        """Per-sample gradients of the divergence to `references` (drawn fresh when not given)."""
        if references is None:
            references = self.references(inputs, generator)
        if self.sequence:
            references = references.view(inputs.shape[0], -1, references.shape[-1])
        if self.plan:
            return self._factored(inputs, references)
        weights = {n: p.detach() for n, p in self.params.items()}
        chunks = [self._vmapped({}, weights, x, r)[0][1] for x, r in self._chunks(inputs, references)]
        return DenseGradients({n: self._samples(torch.cat([c[n] for c in chunks])) for n in self.names})

    # --- internals ----------------------------------------------------------------------------------
    def _chunks(self, inputs: Tensor, references: Tensor):
        return zip(inputs.split(self.chunk_size), references.split(self.chunk_size))

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
            handles = [module.register_forward_hook(_perturb(m, eps, captured), with_kwargs=True)
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
        with torch.no_grad():   # no graph outside the transforms
            return vmap(per_item, in_dims=(None, None, 0, 0))(eps, weights, x, r)

    def _discover(self, x: Tensor, modules: list[str]) -> dict:
        """For one item: shape and dtype of every call's output of the hooked modules, and the name of
        the nn.Linear whose output is the model's output (None if there is none)."""
        key = (tuple(x.shape[1:]), x.dtype)
        if key not in self._call_shapes:
            seen: dict[str, list] = {m: [] for m in modules}
            linear_outputs: dict[str, list] = {}
            handles = [
                self.model.get_submodule(m).register_forward_hook(
                    lambda mod, args, out, m=m: seen[m].append((out.shape, out.dtype)))
                for m in modules
            ]
            for name, module in self.model.named_modules():
                if type(module) is nn.Linear:
                    handles.append(module.register_forward_hook(
                        lambda mod, args, out, name=name: linear_outputs.setdefault(name, []).append(out)))
            try:
                with torch.no_grad():
                    out = self.forward(self.model, x[:1])
            finally:
                for h in handles:
                    h.remove()
            head = [n for n, outs in linear_outputs.items() if len(outs) == 1 and outs[0] is out]
            self._call_shapes[key] = {"calls": seen, "head": head[0] if head else None}
        return self._call_shapes[key]

    def _head(self, x: Tensor) -> nn.Module | None:
        """The position-wise output head to backpropagate through once, unless a chosen tensor is in it."""
        name = self._discover(x, list(self.plan_modules()))["head"]
        if name is None or not self.cut_head:
            return None
        head = self.model.get_submodule(name)
        chosen = {id(p) for p in self.params.values()}
        return None if any(id(p) in chosen for p in head.parameters()) else head

    def plan_modules(self) -> dict[str, list[str]]:
        """Module name -> attributes ("weight", "bias") of its chosen tensors, for the factored ones."""
        by_module: dict[str, list[str]] = {}
        for m, attr in self.plan.values():
            by_module.setdefault(m, []).append(attr)
        return by_module

    def _factored(self, inputs: Tensor, references: Tensor) -> FactoredGradients:
        by_module = self.plan_modules()
        shapes = self._discover(inputs, list(by_module))["calls"]
        unused = [m for m in by_module if not shapes[m]]
        if unused and self.engine == "factored":
            raise ValueError(
                f"modules {unused} are never called in the forward pass, so their chosen weights are used "
                "some other way (e.g. nn.MultiheadAttention's out_proj); use engine='auto' or 'dense'"
            )
        if unused:   # "auto": their tensors go to the dense path
            self.plan = {n: (m, attr) for n, (m, attr) in self.plan.items() if m not in unused}
            if not self.plan:
                return self(inputs, references)   # all dense now
            by_module = self.plan_modules()
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


def _perturb(name: str, eps: dict, captured: dict):
    """Forward hook: record what the module's part needs from its input, add the call's perturbation."""
    def hook(module: nn.Module, args: tuple, kwargs: dict, output: Tensor) -> Tensor:
        calls = captured[name]
        if len(calls) >= len(eps[name]):
            raise RuntimeError(f"module {name} was called more often than when its output shapes were recorded")
        x = args[0] if args else next(iter(kwargs.values()))
        calls.append(capture_input(module, x))
        return output + eps[name][len(calls) - 1]
    return hook
