"""The coefficients a decomposition implies: per subnetwork its path through the model (`path_coefficients`,
running the model) or through its own decoder directions (`decoder_paths`, `paper_coefficients`), and every
input's own path (`own_paths`)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ...decomposition import Decomposition
from ...gradients import call_with


@torch.no_grad()
def path_coefficients(
    model: nn.Module, decomposition: Decomposition, first: str, second: str
) -> tuple[Tensor, list[int]]:
    """The coefficients â (n_out, n_in) a decomposition of a one-hidden-layer model implies, and the input
    each subnetwork reads.

    For subnetwork k, its input j is the largest-norm column of its decoder direction of the first weight
    matrix `first`; W^k are the model's weight matrices `first` and `second` projected on subnetwork k's
    decoder direction of each (biases kept), and â[:, j] = f(e_j; W^k) − f(0; W^k). When several subnetworks
    read one input, the one concentrating the largest share of its first-layer direction on it is kept;
    inputs no subnetwork reads get â[:, j] = 0.
    """
    directions = decomposition.decoder_directions()
    for name in (first, second):
        if name not in directions or directions[name].dim() != 3:
            raise ValueError(f"{name!r} must be a decomposed weight matrix; "
                             f"the decomposition has {decomposition.names}")
    params = dict(model.named_parameters())
    d_in = directions[first]                                   # (C, hidden, n_in)
    n_in = d_in.shape[2]
    column_sq = d_in.pow(2).sum(1)                             # (C, n_in)
    reads = column_sq.argmax(1).tolist()
    concentration = (column_sq.max(1).values / column_sq.sum(1).clamp_min(1e-30)).tolist()
    eye = torch.eye(n_in, device=d_in.device)
    out_dim = params[second].shape[0]
    a_hat = torch.zeros(out_dim, n_in, device=d_in.device)
    best = [-1.0] * n_in
    for k, j in enumerate(reads):
        if concentration[k] <= best[j]:
            continue
        best[j] = concentration[k]
        weights = {n: _project(params[n], directions[n][k]) for n in (first, second)}
        outputs = call_with(model, weights, torch.stack([eye[j], torch.zeros_like(eye[j])]))
        a_hat[:, j] = outputs[0] - outputs[1]
    return a_hat.cpu(), reads


def _project(weight: Tensor, direction: Tensor) -> Tensor:
    """The component of `weight` along `direction`: (<W, d> / ||d||²) d."""
    return (weight * direction).sum() / direction.pow(2).sum().clamp_min(1e-30) * direction


@torch.no_grad()
def decoder_paths(decomposition: Decomposition, first: str = "layers.0.weight",
                  second: str = "layers.1.weight") -> Tensor:
    """Every subnetwork's own linear path d_second,k · d_first,k: (C, n_out, n_in).

    first (C, hidden, n_in) and second (C, n_out, hidden) are decoder directions of two weight matrices in
    nn.Linear's (out, in) layout; the product uses only the decomposition, no model weights, bias or activation.
    In the authors' layout (W_in (n_in, hidden), W_out (hidden, n_out), their notebook's `W_in @ W_out`)
    this is the transpose of their product.
    """
    directions = decomposition.decoder_directions()
    for name in (first, second):
        if name not in directions or directions[name].dim() != 3:
            raise ValueError(f"{name!r} must be a decomposed weight matrix; "
                             f"the decomposition has {decomposition.names}")
    d_first, d_second = directions[first], directions[second]
    if d_second.shape[2] != d_first.shape[1]:
        raise ValueError(f"{second!r} {tuple(d_second.shape[1:])} does not follow {first!r} {tuple(d_first.shape[1:])}")
    return (d_second @ d_first).cpu()


def paper_coefficients(paths: Tensor) -> tuple[Tensor, list[int]]:
    """The paper's derived coefficients: per subnetwork k, the input j_k = argmax_j Σ_o |paths[k, o, j]| and the
    column paths[k, :, j_k] (n_out,). Returns the (C, n_out) columns and the inputs j_k (several subnetworks may
    pick one input, and an input may go unpicked)."""
    if paths.dim() != 3:
        raise ValueError(f"paths must be (C, n_out, n_in), got shape {tuple(paths.shape)}")
    inputs = paths.abs().sum(1).argmax(1)                                      # (C,)
    return paths[torch.arange(paths.shape[0]), :, inputs], inputs.tolist()


def own_paths(model: nn.Module, n_inputs: int) -> Tensor:
    """Every input's own path through `model`, as a decomposition with one unit-norm subnetwork per input would hold
    it: (n_inputs, n_out, n_inputs), zero except paths[j, :, j] = ∂f/∂x_j at x = e_j over its norm.

    For the TMCS toy y = ReLU(W_out W_in x + b) the column is (W_out W_in)[:, j] on the outputs whose ReLU is on at
    x = e_j (a zero column for an input the toy does not pass on). `paper_r(own_paths(toy, n), A)` is the paper's
    number for a perfect one-subnetwork-per-input decomposition of that toy: what the toy lets a decomposition
    with normalized directions reach.
    """
    eye = torch.eye(n_inputs, device=next(model.parameters()).device)
    jacobians = torch.stack([torch.func.jacrev(model)(e)[:, j] for j, e in enumerate(eye)]).detach().double().cpu()
    columns = jacobians / jacobians.norm(dim=1, keepdim=True).clamp_min(1e-30)    # (n_inputs, n_out)
    paths = torch.zeros(n_inputs, columns.shape[1], n_inputs, dtype=torch.float64)
    paths[torch.arange(n_inputs), :, torch.arange(n_inputs)] = columns
    return paths
