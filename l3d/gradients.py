"""Per-sample divergence gradients g_i = ∇_W D(f(x_i; W), y_ref) at W = W0, for any nn.Module."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jacrev, vmap

from .divergence import DIVERGENCES, REFERENCES, divergence, reference_outputs
from .params import select_tensors
from .tucker import Tucker


class DenseGradients:
    """A batch of materialized per-sample gradients: name -> (N, *shape)."""

    def __init__(self, grads: dict[str, Tensor]):
        self.grads = grads

    @property
    def n_samples(self) -> int:
        return next(iter(self.grads.values())).shape[0]

    def __getitem__(self, index: slice | Tensor) -> DenseGradients:
        """The gradients of a subset of the samples."""
        return DenseGradients({n: g[index] for n, g in self.grads.items()})

    def project(self, directions: Sequence[Tucker]) -> Tensor:
        """<v_k, g_i> summed over tensors, for directions given per tensor in collector order: (N, C)."""
        return sum(
            g.flatten(1) @ v.full().flatten(1).T for g, v in zip(self.grads.values(), directions)
        )

    def sq_norms(self) -> Tensor:
        """||g_i||² over all chosen tensors: (N,)."""
        return sum(g.flatten(1).pow(2).sum(1) for g in self.grads.values())

    def flat(self) -> Tensor:
        """All chosen tensors' gradients side by side: (N, n_w)."""
        return torch.cat([g.flatten(1) for g in self.grads.values()], dim=1)


def default_forward(model: nn.Module, x: Tensor) -> Tensor:
    return model(x)


class _ForwardWith(nn.Module):
    def __init__(self, model: nn.Module, forward: Callable[[nn.Module, Tensor], Tensor]):
        super().__init__()
        self.model = model
        self.fn = forward

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(self.model, x)


def call_with(
    model: nn.Module,
    weights: dict[str, Tensor],
    x: Tensor,
    forward: Callable[[nn.Module, Tensor], Tensor] = default_forward,
) -> Tensor:
    """`forward(model, x)` with the named parameters of `model` replaced by `weights` (functionally)."""
    wrapper = _ForwardWith(model, forward)
    return functional_call(wrapper, {f"model.{n}": w for n, w in weights.items()}, (x,), strict=False)


class GradientCollector:
    """Computes per-sample divergence gradients for the chosen tensors of `model`.

    Args:
        model: the trained model; gradients are taken at its current weights, in eval mode.
        tensors: parameter names or globs to decompose.
        divergence: "mse" (regression outputs) or "kl" (logits).
        reference: "random" (another sample's output, the paper's choice), "mean" or "uniform".
        sequence: outputs are (batch, positions, out) and every position is a sample.
        forward: maps (model, inputs) to output tensor (e.g. ``lambda m, x: m(x).logits``).
        chunk_size: items per vectorized chunk, bounding memory.
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
    ):
        if divergence not in DIVERGENCES:
            raise ValueError(f"unknown divergence {divergence!r}: use one of {DIVERGENCES}")
        if reference not in REFERENCES:
            raise ValueError(f"unknown reference {reference!r}: use one of {REFERENCES}")
        if reference == "uniform" and divergence != "kl":
            raise ValueError("reference='uniform' needs divergence='kl' (a uniform distribution over outputs)")
        self.model = model.eval()
        self.params = select_tensors(model, tensors)
        self.names = list(self.params)
        self.divergence = divergence
        self.reference = reference
        self.sequence = sequence
        self.forward = forward or default_forward
        self.chunk_size = chunk_size

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(p.shape) for name, p in self.params.items()}

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    @torch.no_grad()
    def outputs(self, inputs: Tensor) -> Tensor:
        """Model outputs with samples along dim 0: (N, out), positions flattened for sequences."""
        out = torch.cat([self.forward(self.model, x) for x in inputs.split(self.chunk_size)])
        return out.flatten(0, 1) if self.sequence else out

    def references(self, inputs: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Reference outputs for every sample of `inputs`, drawn within this batch: (N, out)."""
        return reference_outputs(self.outputs(inputs), self.divergence, self.reference, generator)

    def __call__(
        self, inputs: Tensor, references: Tensor | None = None, generator: torch.Generator | None = None
    ) -> DenseGradients:
        """Per-sample gradients of the divergence to `references` (drawn fresh when not given)."""
        if references is None:
            references = self.references(inputs, generator)
        n_items = inputs.shape[0]
        if self.sequence:
            references = references.view(n_items, -1, references.shape[-1])
        weights = {n: p.detach() for n, p in self.params.items()}

        def item_divergence(w: dict[str, Tensor], x: Tensor, ref: Tensor) -> Tensor:
            out = call_with(self.model, w, x.unsqueeze(0), self.forward).squeeze(0)
            return divergence(out, ref, self.divergence)

        per_item = jacrev(item_divergence) if self.sequence else grad(item_divergence)
        batched = vmap(per_item, in_dims=(None, 0, 0))
        chunks = [
            batched(weights, x, r)
            for x, r in zip(inputs.split(self.chunk_size), references.split(self.chunk_size))
        ]
        grads = {n: torch.cat([c[n] for c in chunks]) for n in self.names}
        if self.sequence:
            grads = {n: g.flatten(0, 1) for n, g in grads.items()}
        return DenseGradients(grads)
