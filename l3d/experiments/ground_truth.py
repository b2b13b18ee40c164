"""Scoring a decomposition against known ground truth: which subnetwork serves which circuit, how purely,
how selective interventions are and (for the circuit-superposition toy) the coefficients it implies.

A *circuit* is a set of input features that are on together (one feature, or a group). Every circuit is
probed with inputs where only it is active; the impact of each subnetwork on those inputs (`l3d.impacts.impact`)
says how much of the subnetwork's work falls on each circuit. Two diagnostics use the labels themselves to
say what one subnetwork per circuit would reach: `circuit_aligned_error` (one best direction per circuit)
and `fit_circuit_aligned` (a decomposition trained to serve each circuit with its own subnetwork;
`aligned_then_paper` also trains it on with the paper's loss).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment, minimize_scalar
from torch import Tensor, nn

from ..decomposition import Decomposition
from ..gradients import GradientCollector, call_with
from ..impacts import impact
from ..train import GradientSource, History, evaluate, fit


def match(score: Tensor) -> list[tuple[int, int]]:
    """One-to-one matching of rows (e.g. true circuits) to columns (subnetworks) maximizing total score.

    `score` is (n_rows, n_cols); returns (row, col) pairs, one per row when n_rows ≤ n_cols.
    """
    rows, cols = linear_sum_assignment(score.detach().cpu().double().numpy(), maximize=True)
    return list(zip(rows.tolist(), cols.tolist()))


def ordered_subnetworks(matches: Sequence[tuple[int, int]], n_subnetworks: int, circuit: str = "circuit {}",
                        dead: Sequence[int] = ()) -> tuple[list[int], list[str]]:
    """Subnetworks in the order of the circuits matched to them, then the unmatched ones, with row labels
    "subnetwork k (<circuit>)", "subnetwork k (dead)" or "subnetwork k"; `circuit` formats a circuit index.

    matches: one-to-one (circuit, subnetwork) pairs, e.g. from `match`.
    """
    circuit_of = {k: c for c, k in matches}
    order = [k for _, k in sorted(matches)] + [k for k in range(n_subnetworks) if k not in circuit_of]
    labels = [f"subnetwork {k}" + (f" ({circuit.format(circuit_of[k])})" if k in circuit_of
                                   else " (dead)" if k in dead else "") for k in order]
    return order, labels


def circuit_inputs(
    circuits: Sequence[Sequence[int]],
    n_features: int,
    n_samples: int = 200,
    low: float = 0.0,
    high: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """For every circuit, inputs where only its features are on, uniform on [low, high]:
    (n_circuits, n_samples, n_features)."""
    x = torch.zeros(len(circuits), n_samples, n_features)
    for c, features in enumerate(circuits):
        features = list(features)
        if not features or min(features) < 0 or max(features) >= n_features:
            raise ValueError(f"circuit {c} lists features {features}; each must lie in 0..{n_features - 1}")
        x[c][:, features] = low + (high - low) * torch.rand(n_samples, len(features), generator=generator)
    return x


def circuit_impact(
    decomposition: Decomposition, collector: GradientCollector, inputs: Tensor, n_ref: int = 10, seed: int = 0
) -> Tensor:
    """Mean impact of every subnetwork on every circuit's inputs (from `circuit_inputs`): (n_circuits, C).

    References are drawn among the same circuit's inputs, so each gradient involves that circuit only.
    """
    device = next(decomposition.parameters()).device
    return torch.stack([impact(decomposition, collector, x.to(device), n_ref, seed).mean(0) for x in inputs]).cpu()


@dataclass
class Recovery:
    """How a decomposition's subnetworks line up with known circuits.

    impact: (n_circuits, C) mean impact of each subnetwork on each circuit's inputs.
    share: (n_circuits, C) each subnetwork's impact as a fraction of its total over circuits (columns sum to 1).
    live: subnetworks with P_act > 0; dead: the others.
    matches: one-to-one (circuit, subnetwork) pairs over live subnetworks, maximizing the total share.
    purity: per circuit, the share of its matched subnetwork's impact that falls on it (0 if unmatched).
    per_circuit: per circuit, how many live subnetworks put most of their impact on it.
    input_purity: per circuit, the share of its matched subnetwork's first-layer decoder weight on the
        circuit's inputs (`input_purity`; from `recover(first_layer=...)`, else None).
    """

    impact: Tensor
    share: Tensor
    live: list[int]
    dead: list[int]
    matches: list[tuple[int, int]]
    purity: list[float]
    per_circuit: list[int]
    input_purity: list[float] | None = None

    @property
    def all_matched(self) -> bool:
        """Every circuit has a distinct live subnetwork."""
        return len(self.matches) == self.impact.shape[0]

    @property
    def one_per_circuit(self) -> bool:
        """Exactly one live subnetwork per circuit and no other live subnetwork."""
        return all(n == 1 for n in self.per_circuit) and len(self.live) == len(self.per_circuit)

    @property
    def subnetwork_of(self) -> dict[int, int]:
        """circuit -> matched subnetwork."""
        return dict(self.matches)

    def ordered(self, circuit: str = "circuit {}") -> tuple[list[int], list[str]]:
        """Subnetworks in the order of the circuits matched to them, then the unmatched ones, with row labels
        "subnetwork k (<circuit>)", "subnetwork k (dead)" or "subnetwork k"; `circuit` formats a circuit index."""
        return ordered_subnetworks(self.matches, self.share.shape[1], circuit, self.dead)

    def summary(self) -> dict:
        """JSON-ready numbers for metrics.json."""
        return {
            "matches": self.matches,
            "purity": self.purity,
            "min_purity": min(self.purity),
            "mean_purity": sum(self.purity) / len(self.purity),
            "n_live": len(self.live),
            "n_dead": len(self.dead),
            "dead": self.dead,
            "live_per_circuit": self.per_circuit,
            "all_matched": self.all_matched,
            "one_per_circuit": self.one_per_circuit,
            **({} if self.input_purity is None else
               {"input_purity": self.input_purity, "min_input_purity": min(self.input_purity)}),
        }


def recovery_from_impact(circuit_impact: Tensor, p_act: Sequence[float] | Tensor) -> Recovery:
    """Match circuits to live subnetworks one to one and measure purity, from (n_circuits, C) impacts
    and each subnetwork's P_act (from `l3d.evaluate` or the last epoch of the training history)."""
    p_act = torch.as_tensor(p_act, dtype=torch.float64)
    n_circuits, n_subnetworks = circuit_impact.shape
    if p_act.shape != (n_subnetworks,):
        raise ValueError(f"p_act has shape {tuple(p_act.shape)}; expected one value per subnetwork ({n_subnetworks},)")
    impact_ = circuit_impact.detach().double().cpu()
    share = impact_ / impact_.sum(0, keepdim=True).clamp_min(1e-30)
    live = [k for k in range(n_subnetworks) if p_act[k] > 0]
    dead = [k for k in range(n_subnetworks) if p_act[k] == 0]
    matches = [(c, live[j]) for c, j in match(share[:, live])] if live else []
    matched = dict(matches)
    purity = [share[c, matched[c]].item() if c in matched else 0.0 for c in range(n_circuits)]
    best = share[:, live].argmax(0).tolist() if live else []
    per_circuit = [best.count(c) for c in range(n_circuits)]
    return Recovery(impact_, share, live, dead, matches, purity, per_circuit)


def recover(
    decomposition: Decomposition,
    collector: GradientCollector,
    circuits: Sequence[Sequence[int]],
    n_features: int,
    p_act: Sequence[float] | Tensor,
    low: float = 0.0,
    high: float = 1.0,
    n_samples: int = 200,
    n_ref: int = 10,
    seed: int = 0,
    first_layer: str | None = None,
) -> Recovery:
    """`recovery_from_impact` of `circuits` (feature lists) from the impact on inputs where only one circuit is on.

    first_layer: the decomposed weight matrix (out, n_features) that reads the inputs; given, the result
    also holds every circuit's `input_purity`.
    """
    directions = decomposition.decoder_directions()
    if first_layer is not None and (first_layer not in directions or directions[first_layer].shape[-1] != n_features):
        raise ValueError(f"first_layer must name a decomposed weight matrix with {n_features} input columns; "
                         f"got {first_layer!r}, the decomposition has {decomposition.names}")
    generator = torch.Generator().manual_seed(seed)
    inputs = circuit_inputs(circuits, n_features, n_samples, low, high, generator)
    found = recovery_from_impact(circuit_impact(decomposition, collector, inputs, n_ref, seed), p_act)
    if first_layer is not None:
        found.input_purity = input_purity(directions[first_layer], circuits, found.matches)
    return found


def evaluate_and_recover(
    decomposition: Decomposition, source: GradientSource, circuits: Sequence[Sequence[int]], n_features: int, **kwargs
) -> tuple[dict, Recovery]:
    """`l3d.evaluate` on `source` (error, P_act), then `recover` on the source's collector with that P_act;
    kwargs go to `recover` (low, high, n_samples, n_ref, seed, first_layer)."""
    evaluation = evaluate(decomposition, source)
    return evaluation, recover(decomposition, source.collector, circuits, n_features, evaluation["p_act"], **kwargs)


def input_purity(first_layer: Tensor, circuits: Sequence[Sequence[int]], matches: Sequence[tuple[int, int]]) -> list[float]:
    """Per circuit, the share of its matched subnetwork's first-layer weights that reads the circuit's inputs.

    first_layer: (C, hidden, n_in) a direction of every subnetwork for the first weight matrix (decoder
    directions: what the subnetwork *is*; `purity` measures when its encoder fires). The share is the
    squared norm of the circuit's input columns over the squared norm of all columns; 0 for an unmatched circuit.
    """
    if first_layer.dim() != 3:
        raise ValueError(f"first_layer must be (C, hidden, n_in), got shape {tuple(first_layer.shape)}")
    column_sq = first_layer.detach().double().cpu().pow(2).sum(1)                      # (C, n_in)
    share = column_sq / column_sq.sum(1, keepdim=True).clamp_min(1e-30)
    matched = dict(matches)
    return [share[matched[c], list(features)].sum().item() if c in matched else 0.0
            for c, features in enumerate(circuits)]


def circuit_aligned_error(grads: Tensor, active: Tensor) -> tuple[float, Tensor]:
    """The reconstruction error of a decomposition that gives every circuit exactly one direction of its own.

    grads: (N, n_w) per-sample gradients; active: (N, n_circuits) bool, which circuits each sample has on.
    Circuit c's direction is the top right singular vector of the gradients of the samples where only c is
    on (the best single direction for them). Each sample is reconstructed by least squares on the
    directions of its active circuits; a sample with none on, by the one direction that explains most of it.
    Tucker ranks and the BatchTopK budget are ignored. Uses the labels: a diagnostic of how well circuits
    *can* be told apart by single directions, never a way to choose a decomposition.
    Returns Σ‖g − ĝ‖² / Σ‖g‖² and the (n_circuits, n_w) unit directions.
    """
    if grads.dim() != 2 or active.shape != (grads.shape[0], active.shape[-1]) or active.dim() != 2:
        raise ValueError(f"grads must be (N, n_w) and active (N, n_circuits), got {tuple(grads.shape)} and {tuple(active.shape)}")
    g, active = grads.detach().double().cpu(), active.bool().cpu()
    only = active.sum(1) == 1
    if not all((only & active[:, c]).any() for c in range(active.shape[1])):
        raise ValueError("every circuit needs at least one sample where only it is on")
    directions = torch.stack([torch.linalg.svd(g[only & active[:, c]], full_matrices=False).Vh[0]
                              for c in range(active.shape[1])])
    residual = 0.0
    patterns, which = torch.unique(active, dim=0, return_inverse=True)
    for p, on in enumerate(patterns):                             # samples with the same circuits on share a basis
        x = g[which == p]                                         # (m, n_w)
        if on.any():
            basis = directions[on].T                              # (n_w, a)
            residual += (x.T - basis @ torch.linalg.lstsq(basis, x.T).solution).pow(2).sum().item()
        else:
            residual += (x.pow(2).sum(1) - (x @ directions.T).pow(2).max(1).values).sum().item()
    return residual / g.pow(2).sum().item(), directions.float()


def fit_circuit_aligned(
    decomposition: Decomposition,
    collector: GradientCollector,
    inputs: Tensor,
    active: Tensor,
    epochs: int,
    lr: float = 0.01,
    lr_decay: float = 0.8,
    lr_decay_every: int = 100,
    batch_size: int = 32,
    silence: float = 1.0,
    seed: int = 0,
    progress: bool = False,
) -> History:
    """Train `decomposition` with the labels: subnetwork c serves a sample only where circuit c is on, in the
    sample or in its reference. This is `l3d.fit` on a source with labels (`GradientSource(active=...)`): the
    L3D loss with BatchTopK's choice replaced by that mask, plus `silence` times the energy of the
    coefficients the mask drops (so the encoders stay quiet elsewhere), all inputs in one gradient pass per
    epoch with a random other sample as every sample's reference.

    inputs: (N, n_in); active: (N, C) bool, which circuits each input has on (one circuit per subnetwork).
    Uses the labels: a diagnostic of what a decomposition with one subnetwork per circuit can reach (its error,
    its purity, whether the paper's loss keeps it; notebook 04), never a way to choose a decomposition.
    Returns the training history.
    """
    n = inputs.shape[0]
    if active.shape != (n, decomposition.n_subnetworks):
        raise ValueError(f"active must be (n_inputs, n_subnetworks) = ({n}, {decomposition.n_subnetworks}), "
                         f"got {tuple(active.shape)}")
    if not 2 <= batch_size <= n:
        raise ValueError(f"batch_size must lie in 2..{n} (the number of inputs), got {batch_size}")
    source = GradientSource(collector, inputs, batch_size, chunk_size=n // batch_size * batch_size, seed=seed,
                            active=active)
    return fit(decomposition, source, epochs, lr, lr_decay, lr_decay_every, progress=progress, silence=silence)


def aligned_then_paper(
    decomposition: Decomposition,
    source: GradientSource,
    active: Tensor,
    epochs: int,
    lr: float = 0.01,
    lr_decay: float = 0.8,
    lr_decay_every: int = 100,
    batch_size: int = 32,
    seed: int = 0,
) -> Iterator[tuple[str, Decomposition]]:
    """Does the paper's loss keep one subnetwork per circuit? Trains `decomposition` with the labels
    (`fit_circuit_aligned` on the source's collector and inputs) and yields ("aligned", decomposition), then
    trains it on for as many epochs with the paper's loss (`l3d.fit`) and yields ("aligned_then_paper",
    decomposition). The same object is trained in place: score (or copy) each stage as it is yielded.
    """
    fit_circuit_aligned(decomposition, source.collector, source.inputs, active, epochs, lr, lr_decay, lr_decay_every,
                        batch_size, seed=seed)
    yield "aligned", decomposition
    fit(decomposition, source, epochs, lr, lr_decay, lr_decay_every, progress=False)
    yield "aligned_then_paper", decomposition


def own_outputs(groups: Sequence[Sequence[int]], n_outputs: int) -> Tensor:
    """(S, n_outputs) bool: row s marks the outputs of groups[s], what intervention s is meant to move
    (the `own` of `intervention_selectivity`)."""
    own = torch.zeros(len(groups), n_outputs, dtype=torch.bool)
    for row, outputs in enumerate(groups):
        own[row, list(outputs)] = True
    return own


def intervention_selectivity(effect: Tensor, own: Tensor) -> float:
    """Mean over interventions of (mean change of the intervention's own outputs) / (mean change of the others).

    effect: (S, O) mean |Δ output| of each of O outputs under each of S interventions.
    own: (S, O) bool, what each intervention is meant to move.
    """
    if effect.shape != own.shape:
        raise ValueError(f"effect {tuple(effect.shape)} and own {tuple(own.shape)} must have the same shape")
    own = own.bool()
    if not (own.any(1) & (~own).any(1)).all():
        raise ValueError("every intervention needs at least one own output and one other output")
    own_mean = (effect * own).sum(1) / own.sum(1)
    other_mean = (effect * ~own).sum(1) / (~own).sum(1)
    return (own_mean / other_mean.clamp_min(1e-12)).mean().item()


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
            raise ValueError(f"{name!r} must be a decomposed weight matrix; the decomposition has {decomposition.names}")
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
def decoder_paths(decomposition: Decomposition, first: str = "layers.0.weight", second: str = "layers.1.weight") -> Tensor:
    """Every subnetwork's own linear path d_second,k · d_first,k: (C, n_out, n_in).

    first (C, hidden, n_in) and second (C, n_out, hidden) are decoder directions of two weight matrices in
    nn.Linear's (out, in) layout; the product uses only the decomposition, no model weights, bias or activation.
    In the authors' layout (W_in (n_in, hidden), W_out (hidden, n_out), their notebook's `W_in @ W_out`)
    this is the transpose of their product.
    """
    directions = decomposition.decoder_directions()
    for name in (first, second):
        if name not in directions or directions[name].dim() != 3:
            raise ValueError(f"{name!r} must be a decomposed weight matrix; the decomposition has {decomposition.names}")
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


def paper_r(paths: Tensor, coefficients: Tensor) -> float:
    """The TMCS number the paper prints as "r² = 0.92": a Pearson r, computed as in the authors' notebook
    (tm2_circuit_superposition.ipynb).

    paths: (C, n_out, n_in) each subnetwork's product of its own decoder directions (`decoder_paths`);
    coefficients: the true A (n_out, n_in) of y = A x. Per subnetwork k take the input j_k whose column of
    paths[k] has the largest sum of |·| and that column (`paper_coefficients`); concatenate those columns over
    subnetworks and A[:, j_k] likewise, and return np.corrcoef of the two (r, not r²). Scale and sign of each
    direction enter: subnetworks are not rescaled, and a direction's sign flips both of its tensors, so the
    product keeps its sign. Unlike `path_coefficients`, nothing here runs the model.
    """
    if coefficients.dim() != 2 or paths.shape[1:] != coefficients.shape:
        raise ValueError(f"paths must be (C, n_out, n_in) and coefficients (n_out, n_in), "
                         f"got {tuple(paths.shape)} and {tuple(coefficients.shape)}")
    columns, inputs = paper_coefficients(paths.detach().double().cpu())
    true = coefficients.detach().double().cpu()[:, inputs].T                  # (C, n_out)
    return torch.corrcoef(torch.stack([columns.flatten(), true.flatten()]))[0, 1].item()


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


def r_squared(predicted: Tensor, true: Tensor) -> float:
    """Coefficient of determination 1 − Σ(true − predicted)² / Σ(true − mean)² over all entries."""
    true, predicted = true.double().flatten(), predicted.double().flatten()
    return (1 - (true - predicted).pow(2).sum() / (true - true.mean()).pow(2).sum()).item()


def squared_correlation(predicted: Tensor, true: Tensor) -> float:
    """r² as a scatter plot's fitted line reports it: the squared Pearson correlation over all entries."""
    return torch.corrcoef(torch.stack([predicted.detach().double().flatten(), true.detach().double().flatten()]))[0, 1].item() ** 2


def low_rank_r2(true: Tensor, rank: int) -> float:
    """The largest squared correlation with `true` (n_out, n_in) that any matrix of rank ≤ `rank` can reach.

    A network whose inputs pass through `rank` hidden units maps single inputs through a rank-`rank` matrix,
    so this bounds the r² of its own coefficients against `true`. corr(M, A)² = 1 − min_{a,b} ‖A − a − bM‖² /
    Σ(A − mean)², and for a fixed offset a the best rank-`rank` bM is the truncated SVD of A − a (Eckart–Young);
    the offset is searched on a grid over A's range, then refined.
    """
    if true.dim() != 2 or not 1 <= rank:
        raise ValueError(f"true must be a matrix and rank ≥ 1, got shape {tuple(true.shape)} and rank {rank}")
    a = true.detach().double().cpu()
    total = (a - a.mean()).pow(2).sum().item()
    if rank >= min(a.shape) or total == 0:
        return 1.0

    def missed(offset: float) -> float:
        return torch.linalg.svdvals(a - offset)[rank:].pow(2).sum().item()

    grid = torch.linspace(a.min().item(), a.max().item(), 201).tolist()
    best = min(range(len(grid)), key=lambda i: missed(grid[i]))
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    offset = minimize_scalar(missed, bounds=(low, high), method="bounded").x if high > low else low
    return 1 - min(missed(offset), missed(grid[best])) / total


def mmcs(slices: Tensor, weights: Tensor) -> float:
    """Mean max cosine similarity: mean over features of the largest |cos| over subnetworks.

    slices: (C, F, D) each subnetwork's slice for each feature; weights: (F, D) the model's own weights
    for each feature. 1 when every feature has a subnetwork whose slice is parallel to it.
    """
    if slices.dim() != 3 or weights.dim() != 2 or slices.shape[1:] != weights.shape:
        raise ValueError(f"slices must be (C, F, D) and weights (F, D), got {tuple(slices.shape)} and {tuple(weights.shape)}")
    cos = torch.nn.functional.cosine_similarity(slices, weights.unsqueeze(0), dim=-1, eps=1e-12)   # (C, F)
    return cos.abs().max(0).values.mean().item()
