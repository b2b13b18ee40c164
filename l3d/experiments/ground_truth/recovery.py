"""Which subnetwork serves which circuit, and how purely: circuits probed one at a time (`circuit_inputs`,
`circuit_impact`), matched one to one to live subnetworks (`match`, `recover`: a `Recovery`, with each match's
impact share), the purity of the matched subnetworks' first-layer weights (`input_purity`), and MMCS against the
model's own weights (`mmcs`)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from ...decomposition import Decomposition
from ...gradients import GradientCollector
from ...impacts import impact
from ...passes import evaluate
from ...source import GradientSource


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
    impact_share: per circuit, the share of its matched subnetwork's impact that falls on it (0 if unmatched).
    per_circuit: per circuit, how many live subnetworks put most of their impact on it.
    input_purity: per circuit, the share of its matched subnetwork's first-layer decoder weight on the
        circuit's inputs (`input_purity`; from `recover(first_layer=...)`, else None).
    """

    impact: Tensor
    share: Tensor
    live: list[int]
    dead: list[int]
    matches: list[tuple[int, int]]
    impact_share: list[float]
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
            "impact_share": self.impact_share,
            "min_impact_share": min(self.impact_share),
            "mean_impact_share": sum(self.impact_share) / len(self.impact_share),
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
    """Match circuits to live subnetworks one to one and measure their impact shares, from (n_circuits, C) impacts
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
    impact_share = [share[c, matched[c]].item() if c in matched else 0.0 for c in range(n_circuits)]
    best = share[:, live].argmax(0).tolist() if live else []
    per_circuit = [best.count(c) for c in range(n_circuits)]
    return Recovery(impact_, share, live, dead, matches, impact_share, per_circuit)


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


def input_purity(first_layer: Tensor, circuits: Sequence[Sequence[int]],
                 matches: Sequence[tuple[int, int]]) -> list[float]:
    """Per circuit, the share of its matched subnetwork's first-layer weights that reads the circuit's inputs.

    first_layer: (C, hidden, n_in) a direction of every subnetwork for the first weight matrix (decoder
    directions: what the subnetwork *is*; `impact_share` measures when its encoder fires). The share is the
    squared norm of the circuit's input columns over the squared norm of all columns; 0 for an unmatched circuit.
    """
    if first_layer.dim() != 3:
        raise ValueError(f"first_layer must be (C, hidden, n_in), got shape {tuple(first_layer.shape)}")
    column_sq = first_layer.detach().double().cpu().pow(2).sum(1)                      # (C, n_in)
    share = column_sq / column_sq.sum(1, keepdim=True).clamp_min(1e-30)
    matched = dict(matches)
    return [share[matched[c], list(features)].sum().item() if c in matched else 0.0
            for c, features in enumerate(circuits)]


def mmcs(slices: Tensor, weights: Tensor) -> float:
    """Mean max cosine similarity: mean over features of the largest |cos| over subnetworks.

    slices: (C, F, D) each subnetwork's slice for each feature; weights: (F, D) the model's own weights
    for each feature. 1 when every feature has a subnetwork whose slice is parallel to it.
    """
    if slices.dim() != 3 or weights.dim() != 2 or slices.shape[1:] != weights.shape:
        raise ValueError(f"slices must be (C, F, D) and weights (F, D), "
                         f"got {tuple(slices.shape)} and {tuple(weights.shape)}")
    cos = torch.nn.functional.cosine_similarity(slices, weights.unsqueeze(0), dim=-1, eps=1e-12)   # (C, F)
    return cos.abs().max(0).values.mean().item()
