"""Causal selectivity: does moving the weights along a subnetwork's decoder direction change the model's outputs on
the samples it matters for, and much less on the others, more than a random direction of the same form does?

A subnetwork's top samples (largest impact) say where it is *read*; an intervention says what it *does*. For
subnetwork k with decoder direction d_k, its top samples S_k and other samples O_k (a fixed random draw of held-out
samples, S_k taken out), and a small sweep of step sizes δ ∈ Δ:

    D_i(δ) = D( f(x_i; W0 + δ d_k), f(x_i; W0) )      the model's divergence to itself unmodified, per sample
                                                      (per token for sequences: KL of the next-token distribution;
                                                      KL of the class distribution for images)
    ρ_k    = mean_{δ∈Δ} mean_{i∈S_k} D_i(δ)  /  mean_{δ∈Δ} mean_{i∈O_k} D_i(δ)

The baseline is the same ratio for r_k, d_k's random twin: a random direction with its Tucker ranks and norm
(`random_directions`), on the same S_k and O_k. The top samples are chosen by their gradients against *other*
samples' outputs, which says nothing of how far any direction moves them from their *own* output: confidently
predicted samples hardly move in any direction, and random directions can score ρ far below 1. The twin measures
that, and ρ_k / ρ_k(twin) is what d_k adds (`THRESHOLD`). For small δ,
D_i(δ) ≈ ½ δ² d_kᵀ F_i d_k (F_i the Fisher information of sample i), so ρ_k hardly depends on δ while the sweep
stays small (`causal_selectivity` records the ratio per δ too).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..decomposition import Decomposition
from ..divergences import DIVERGENCE_RENAMES, DIVERGENCES, divergence
from ..gradients import default_forward
from ..interventions import intervene
from ..runtime.medians import lower_median
from ..runtime.validate import as_int, as_seed, renamed

# The intervention sweep along a unit-norm decoder direction: small next to the decomposed weights' norm (5.8 for the
# embedded transformer's attention block, 9.6 for the digits CNN's block), so that every divergence stays in its
# quadratic regime and ρ does not depend on δ: on the digits CNN the ratios at ±0.1 and ±0.2 agree within 20 %, while
# at -0.5 some subnetworks leave that regime (the median ρ at -0.5 is three times that at ±0.25). Both signs, as a
# direction is defined up to its sign.
DELTAS = (-0.2, -0.1, 0.1, 0.2)
# A subnetwork counts as selective when its ρ is at least THRESHOLD times the ρ of its random twin (a random direction
# of the same form on the same top and other samples). The twin sees the same samples, so the quotient removes how
# sensitive those samples are in any direction: the top samples are where the divergence to other samples' outputs
# is large, often confident predictions, which hardly move in any direction (on the digits CNN random directions move
# the top images 50 times less than the others, ρ ≈ 0.02). 3 is the target multiple, asked here of each
# subnetwork rather than of the medians.
THRESHOLD = 3.0


@dataclass(frozen=True)
class Selectivity:
    """Per measured subnetwork (`subnetworks`, in order): ρ (K,), the mean divergence over δ on its top samples (K,)
    and on the others (K,), and the ratio per δ (K, len(deltas))."""

    subnetworks: list[int]
    ratio: Tensor
    top: Tensor
    others: Tensor
    ratio_per_delta: Tensor


def _deltas(deltas: Sequence[float]) -> list[float]:
    values = [float(d) for d in deltas]
    if not values or any(d == 0 or d != d for d in values):
        raise ValueError(f"deltas must be a non-empty list of non-zero step sizes δ, got {list(deltas)}")
    return values


def sample_divergences(
    model: nn.Module,
    decomposition: Decomposition,
    subnetwork: int,
    deltas: Sequence[float],
    inputs: Tensor,
    *,
    forward: Callable[[nn.Module, Tensor], Tensor] = default_forward,
    sequence: bool = False,
    kind: str = "kl",
) -> Tensor:
    """D(f(x_i; W0 + δ d_k), f(x_i; W0)) for every δ and every sample of `inputs` (`l3d.intervene`, the model in eval
    mode): (len(deltas), samples), samples = items, or items × positions (item-major) for sequences."""
    kind = renamed("kind", kind, DIVERGENCE_RENAMES)
    if kind not in DIVERGENCES:
        raise ValueError(f"kind must be one of {DIVERGENCES} (the divergence between outputs), got {kind!r}")
    outs = intervene(model, decomposition, subnetwork, [0.0, *_deltas(deltas)], inputs, forward=forward)
    outs = (outs.flatten(1, 2) if sequence else outs).double()         # (1 + D, samples, out)
    # in float64: at small δ the divergence is a difference of nearly equal log-probabilities, below float32's
    # resolution on confidently predicted samples (the outputs' own float32 rounding enters only squared)
    return divergence(outs[1:], outs[:1].expand_as(outs[1:]), kind)


def selectivity(
    model: nn.Module,
    decomposition: Decomposition,
    inputs: Tensor,
    top: Tensor,
    others: Tensor,
    deltas: Sequence[float] = DELTAS,
    subnetworks: Sequence[int] | None = None,
    *,
    forward: Callable[[nn.Module, Tensor], Tensor] = default_forward,
    sequence: bool = False,
    kind: str = "kl",
) -> Selectivity:
    """ρ_k of every subnetwork in `subnetworks` (default: all) for the decomposition's decoder directions (module
    docstring).

    inputs: the held-out items; top: (C, n_top) sample indices per subnetwork (`l3d.top_samples`); others: (M,)
    sample indices (`other_samples`), S_k taken out for subnetwork k. A sample of a sequence model is item × L +
    position (L = inputs.shape[1]). The model runs once per δ on the items that hold S_k or the others.
    """
    deltas = _deltas(deltas)
    ks = (list(range(decomposition.n_subnetworks)) if subnetworks is None
          else [as_int("subnetworks", k) for k in subnetworks])
    if top.dim() != 2 or top.shape[0] != decomposition.n_subnetworks:
        raise ValueError(f"top must be (n_subnetworks, n_top) = ({decomposition.n_subnetworks}, n), one row of sample "
                         f"indices per subnetwork, got {tuple(top.shape)}")
    per_item = inputs.shape[1] if sequence else 1
    n_samples = inputs.shape[0] * per_item
    top, others = top.cpu().long(), others.cpu().long().flatten()
    for name, index in (("top", top), ("others", others)):
        if index.numel() and not 0 <= int(index.min()) <= int(index.max()) < n_samples:
            raise ValueError(f"{name}: sample indices must lie in 0..{n_samples - 1} ({inputs.shape[0]} items"
                             f"{f' × {per_item} positions' if sequence else ''}), "
                             f"got {int(index.min())}..{int(index.max())}")
    rows = []
    for k in ks:
        mine = top[k]
        rest = others[~torch.isin(others, mine)]
        if rest.numel() == 0:
            raise ValueError(f"others: no sample is left for subnetwork {k} once its top samples are taken out")
        items, local = torch.unique(torch.cat([mine, rest]) // per_item, return_inverse=True)
        samples = local * per_item + torch.cat([mine, rest]) % per_item        # the samples among the items run
        moved = sample_divergences(model, decomposition, k, deltas, inputs[items.to(inputs.device)], forward=forward,
                                   sequence=sequence, kind=kind)[:, samples.to(inputs.device)].double().cpu()
        on_top, on_rest = moved[:, :len(mine)].mean(1), moved[:, len(mine):].mean(1)        # (D,) each
        rows.append((on_top.mean(), on_rest.mean(), on_top / on_rest.clamp_min(1e-300)))
    top_mean = torch.stack([r[0] for r in rows])
    rest_mean = torch.stack([r[1] for r in rows])
    return Selectivity(ks, top_mean / rest_mean.clamp_min(1e-300), top_mean, rest_mean,
                       torch.stack([r[2] for r in rows]))


def random_directions(decomposition: Decomposition, seed: int = 0) -> Decomposition:
    """A decomposition whose decoder directions are random, with `decomposition`'s tensors, Tucker ranks and every
    subnetwork's decoder norm (over all its tensors): cores and factors drawn as a new decomposition's (`Tucker`),
    from `seed`. Its encoders are not meant to be used."""
    seed = as_seed("seed", seed)
    core = decomposition.decoder[0].core
    rand = Decomposition(decomposition.shapes, decomposition.n_subnetworks, decomposition.ranks, decomposition.top_k,
                         seed=seed, decoder_norm=decomposition.decoder_norm).to(core.device, core.dtype)
    with torch.no_grad():
        scale = (decomposition.flat_directions().norm(dim=1) / rand.flat_directions().norm(dim=1).clamp_min(1e-30))
        for t in rand.decoder:
            t.core.mul_(scale.view(-1, *[1] * (t.core.dim() - 1)))
    return rand


def other_samples(n_items: int, n_other_items: int, per_item: int = 1, seed: int = 0) -> Tensor:
    """Every sample of `n_other_items` items drawn at random among `n_items` (without replacement; seeded): the
    "other" samples of `selectivity`, (n_other_items · per_item,) sorted. For sequences per_item is the positions
    per item, so the others are whole texts and the model runs on few items."""
    n_items, n_other_items, per_item = (as_int("n_items", n_items), as_int("n_other_items", n_other_items),
                                        as_int("per_item", per_item))
    if not 1 <= n_other_items <= n_items:
        raise ValueError(f"n_other_items must lie in 1..{n_items} (the held-out items), got {n_other_items}")
    items = torch.randperm(n_items, generator=torch.Generator().manual_seed(as_seed("seed", seed)))[:n_other_items]
    return (items.sort().values.unsqueeze(1) * per_item + torch.arange(per_item)).flatten()


def causal_selectivity(
    model: nn.Module,
    decomposition: Decomposition,
    inputs: Tensor,
    top: Tensor,
    live: Tensor,
    others: Tensor,
    deltas: Sequence[float] = DELTAS,
    threshold: float = THRESHOLD,
    seed: int = 0,
    *,
    forward: Callable[[nn.Module, Tensor], Tensor] = default_forward,
    sequence: bool = False,
    kind: str = "kl",
) -> dict:
    """`selectivity` of every live subnetwork (live: (C,) bool) for the decomposition and for its random twins
    (`random_directions`, `seed`), for metrics.json: `summarize`'s numbers, with the per-subnetwork lists they are
    made from (`pool` joins several such results)."""
    ks = torch.nonzero(live.cpu()).flatten().tolist()
    if not ks:
        raise ValueError("live: no subnetwork is live, so there is nothing to measure")
    options = dict(forward=forward, sequence=sequence, kind=kind)
    mine = selectivity(model, decomposition, inputs, top, others, deltas, ks, **options)
    rand = selectivity(model, random_directions(decomposition, seed), inputs, top, others, deltas, ks, **options)
    lists = {"subnetworks": ks, "ratio": mine.ratio.tolist(), "random_ratio": rand.ratio.tolist(),
             "top_divergence": mine.top.tolist(), "other_divergence": mine.others.tolist(),
             "random_top_divergence": rand.top.tolist(), "random_other_divergence": rand.others.tolist(),
             "ratio_per_delta": mine.ratio_per_delta.tolist(), "random_ratio_per_delta": rand.ratio_per_delta.tolist()}
    return summarize(lists, deltas, threshold, int(others.numel()))


LISTS = ("subnetworks", "ratio", "random_ratio", "top_divergence", "other_divergence", "random_top_divergence",
         "random_other_divergence", "ratio_per_delta", "random_ratio_per_delta")


def summarize(lists: dict, deltas: Sequence[float], threshold: float, n_other: int) -> dict:
    """The numbers of a causal selectivity from its per-subnetwork lists (LISTS, one entry per measured subnetwork):
    - median_ratio and random_median_ratio (over the subnetworks), and their quotient median_over_random;
      every median here is the lower median (`l3d.runtime.medians.lower_median`) for an even count;
    - median_gain, the median of ρ_k / ρ_k(random twin), and fraction_selective, the share with
      ρ_k ≥ threshold · ρ_k(random twin) (see THRESHOLD);
    - fraction_above_threshold and random_fraction_above_threshold: the shares with ρ ≥ threshold itself;
    - the medians of the mean divergences on top and other samples, of both;
    - median_ratio_per_delta and random_median_ratio_per_delta (one per δ: equal in the quadratic regime);
    - the settings (deltas, threshold, n_live, n_other), and the lists themselves."""
    ratio = torch.tensor(lists["ratio"], dtype=torch.float64)
    rand = torch.tensor(lists["random_ratio"], dtype=torch.float64)
    gain = ratio / rand.clamp_min(1e-300)

    def median(key: str) -> float:
        return lower_median(torch.tensor(lists[key], dtype=torch.float64)).item()

    return {
        "median_ratio": lower_median(ratio).item(),
        "random_median_ratio": lower_median(rand).item(),
        "median_over_random": lower_median(ratio).item() / lower_median(rand).item(),
        "median_gain": lower_median(gain).item(),
        "fraction_selective": (gain >= threshold).double().mean().item(),
        "fraction_above_threshold": (ratio >= threshold).double().mean().item(),
        "random_fraction_above_threshold": (rand >= threshold).double().mean().item(),
        "median_top_divergence": median("top_divergence"), "median_other_divergence": median("other_divergence"),
        "random_median_top_divergence": median("random_top_divergence"),
        "random_median_other_divergence": median("random_other_divergence"),
        "median_ratio_per_delta": lower_median(torch.tensor(lists["ratio_per_delta"]), 0).tolist(),
        "random_median_ratio_per_delta": lower_median(torch.tensor(lists["random_ratio_per_delta"]), 0).tolist(),
        "deltas": [float(d) for d in deltas], "threshold": threshold, "n_live": len(lists["ratio"]), "n_other": n_other,
        **{key: lists[key] for key in LISTS},
    }


def pool(results: Sequence[dict], offsets: Sequence[int] | None = None) -> dict:
    """Several `causal_selectivity` results (of the same deltas, threshold and n_other, e.g. one per layer) as one:
    their per-subnetwork lists joined, subnetwork k of results[j] renamed offsets[j] + k (default: the subnetwork
    counts before it are not known, so offsets 0), and `summarize`d again."""
    if not results:
        raise ValueError("results: nothing to pool")
    first = results[0]
    for j, r in enumerate(results[1:], start=1):
        if (r["deltas"], r["threshold"], r["n_other"]) != (first["deltas"], first["threshold"], first["n_other"]):
            raise ValueError(f"results[{j}] has other deltas, threshold or n_other than results[0]: they do not pool")
    offsets = [0] * len(results) if offsets is None else list(offsets)
    lists = {key: [v for r in results for v in r[key]] for key in LISTS if key != "subnetworks"}
    lists["subnetworks"] = [o + k for r, o in zip(results, offsets) for k in r["subnetworks"]]
    return summarize(lists, first["deltas"], first["threshold"], first["n_other"])
