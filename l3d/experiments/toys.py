"""Toys with known circuits (spec §4): their data (`sparse_features`, `group_features`, `random_coefficients`),
the TMS's feature matching, and how the authors train and decompose them (`AUTHORS_CONVENTIONS`). The models are
in `toy_models` and their training in `toy_training`, both importable from here too."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..runtime.validate import as_float, as_int
from .ground_truth import match
from .toy_models import (
    LAYOUTS,
    MLP,
    TMS,
    TOYS,
    VARIANTS,
    build,
    circuit_superposition,
    high_rank_circuits,
    identity,
    square_mlp,
)
from .toy_training import train_toy, train_toys, train_toys_best_of

__all__ = [
    "AUTHORS_CONVENTIONS", "Conventions", "LAYOUTS", "MAX_DRAWS", "MAX_ROUNDS", "MLP", "TMS", "TOYS", "VARIANTS",
    "build", "circuit_superposition", "feature_groups", "group_features", "high_rank_circuits", "identity",
    "random_coefficients", "sparse_features", "square_mlp", "tms_feature_match", "train_toy", "train_toys",
    "train_toys_best_of", "weight_bias_ranks",
]

MAX_DRAWS, MAX_ROUNDS = 10**8, 10**5   # what sparse_features may draw to keep n_samples nonzero samples


def sparse_features(
    n_samples: int,
    n_features: int,
    p_active: float = 0.05,
    low: float = 0.0,
    high: float = 1.0,
    generator: torch.Generator | None = None,
    drop_zero: bool = True,
) -> Tensor:
    """Samples whose features are each active with probability p_active, uniform on [low, high]:
    (n_samples, n_features). drop_zero: all-zero samples are dropped (and replaced), as for toy training;
    False keeps them, so about (1 − p_active)^n_features of the samples are all zero.

    With drop_zero, a sample is kept with probability q = 1 − (1 − p_active)^n_features, so about n_samples / q
    samples are drawn, in 1 / q rounds of n_samples; settings that would need more than MAX_DRAWS samples or
    MAX_ROUNDS rounds (p_active = 1e-9) are refused rather than left to run for hours, and so is low = high = 0
    (every sample all zero)."""
    n_samples, n_features = as_int("n_samples", n_samples), as_int("n_features", n_features)
    p_active, low, high = as_float("p_active", p_active), as_float("low", low), as_float("high", high)
    if not 0 <= p_active <= 1:
        raise ValueError(f"p_active is a probability and must lie in [0, 1], got {p_active}")
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"low and high must be finite numbers, got low={low}, high={high}")
    if drop_zero and p_active == 0:
        raise ValueError("p_active = 0 makes every sample all zero, and drop_zero=True drops those: use p_active > 0 "
                         "(or drop_zero=False for all-zero samples)")
    if drop_zero and low == high == 0:
        raise ValueError("low = high = 0 makes every value, so every sample, zero, and drop_zero=True drops those: "
                         "give a range with a nonzero value (or drop_zero=False for all-zero samples)")
    kept = -math.expm1(n_features * math.log1p(-p_active)) if p_active < 1 else 1.0   # q, without cancellation
    if drop_zero and n_samples and (n_samples / kept > MAX_DRAWS or 1 / kept > MAX_ROUNDS):
        raise ValueError(
            f"p_active={p_active} with {n_features} features makes a nonzero sample 1 in {1 / kept:.3g} draws: "
            f"drop_zero=True would draw about {n_samples / kept:.3g} samples in {1 / kept:.3g} rounds of "
            f"n_samples={n_samples} (at most {MAX_DRAWS:.0e} samples and {MAX_ROUNDS:.0e} rounds are drawn); use a "
            f"larger p_active, or drop_zero=False"
        )
    rows: list[Tensor] = []
    have = 0
    while have < n_samples:
        active = torch.rand(n_samples, n_features, generator=generator) < p_active
        values = low + (high - low) * torch.rand(n_samples, n_features, generator=generator)
        x = values * active
        x = x[active.any(1)] if drop_zero else x
        rows.append(x)
        have += x.shape[0]
    return torch.cat(rows)[:n_samples]


def tms_feature_match(model: TMS, directions: dict[str, Tensor]) -> dict[str, Tensor | list]:
    """Match each TMS feature to a distinct subnetwork through the subnetworks' W_in components.

    The hidden-space direction of subnetwork k for feature i is column i of its W_in component, the
    counterpart of the feature's embedding W_in[:, i]. Features and subnetworks are matched one-to-one
    (`ground_truth.match`) on |cos| times the share of the component's norm in column i, so a subnetwork
    counts for a feature only when it is both parallel to the embedding and concentrated on it.

    directions: name -> (C, *shape) with at least "W_in" (C, n_hidden, n_features): a decomposition of a TMS of
    layout "matrices" (notebook 01; the field benchmarks' layout "linear" is scored by `field.tms_scores`).
    Returns pairs [(feature, subnetwork)], cosines (|cos| of each pair), and the (F, C) matrices cos and share.
    """
    embedding = model.weight_in().detach()                # (H, F)
    columns = directions["W_in"].detach().transpose(1, 2)  # (C, F, H)
    cos = torch.nn.functional.cosine_similarity(columns, embedding.T.unsqueeze(0), dim=-1, eps=1e-12).abs().T
    share = (columns.norm(dim=-1) / columns.flatten(1).norm(dim=1, keepdim=True).clamp_min(1e-30)).T   # (F, C)
    pairs = match(cos * share)
    return {"pairs": pairs, "cosines": [cos[i, k].item() for i, k in pairs], "cos": cos, "share": share}


def group_features(
    n_samples: int,
    n_groups: int,
    group_size: int,
    p_active: float = 0.05,
    low: float = 0.0,
    high: float = 1.0,
    generator: torch.Generator | None = None,
    drop_zero: bool = True,
) -> Tensor:
    """Samples whose features switch on and off in groups: group g is active with probability p_active,
    and then all its `group_size` features are uniform on [low, high]. drop_zero: all-zero samples are
    dropped (and replaced), as for toy training; False keeps them (about (1 − p_active)^n_groups of the samples).

    Returns (n_samples, n_groups * group_size); features g*group_size … (g+1)*group_size − 1 form group g.
    """
    # (N, n_groups)
    groups = sparse_features(n_samples, n_groups, p_active, generator=generator, drop_zero=drop_zero) > 0
    values = low + (high - low) * torch.rand(n_samples, n_groups * group_size, generator=generator)
    return values * groups.repeat_interleave(group_size, dim=1)


def feature_groups(n_groups: int, group_size: int) -> list[list[int]]:
    """The features of each group as `group_features` lays them out."""
    return [list(range(g * group_size, (g + 1) * group_size)) for g in range(n_groups)]


def random_coefficients(n_out: int, n_in: int, high: float = 3.0, generator: torch.Generator | None = None) -> Tensor:
    """A coefficient matrix with entries uniform on [0, high]: (n_out, n_in)."""
    return high * torch.rand(n_out, n_in, generator=generator)


def weight_bias_ranks(shapes: dict[str, tuple[int, ...]], weight: int, bias: int) -> dict[str, int]:
    """A Tucker rank per tensor for `Decomposition(rank=...)`: `bias` for vectors, `weight` for the others
    (the authors' x² run: weight 2, bias 1)."""
    return {name: bias if len(shape) == 1 else weight for name, shape in shapes.items()}


@dataclass(frozen=True)
class Conventions:
    """How a toy is trained and its L3D samples drawn and decomposed (the toy notebooks' settings,
    `toy_experiment.VariantExperiment.conventions`, read them for variant="authors").

    toy_weight_decay: AdamW weight decay of toy training (lr 1e-3 without decay, 1000 epochs, 10,000 samples
        without all-zero inputs, as the notebooks train every toy).
    toy_batch_size: samples per toy training step.
    drop_zero_inputs: the L3D samples have no all-zero input.
    divergence, reference: `L3DConfig`'s settings of the same names; reference_pool: where references are drawn
        from, "samples" (every L3D sample: one gradient pass per epoch) or "batch" (the same batch, as the authors'
        code).
    warm_start_epochs: per toy ("tmcs", "high_rank", "square"), epochs at top_k = 1 before BatchTopK.
    decoder_norm: `L3DConfig.decoder_norm`, how the decoder directions are scaled after every step.
    """

    toy_weight_decay: float
    toy_batch_size: int
    drop_zero_inputs: bool
    divergence: str
    reference: str
    reference_pool: str
    warm_start_epochs: dict[str, int]
    decoder_norm: str


# The authors' code at their scripts' .sh settings. Toys: AdamW weight decay 1e-3 (toy_models/trainer.py), batch 32
# in each of the 4 processes the toy .sh files start (torchrun --nproc-per-node=4, DDP with a distributed sampler: a
# global batch of 128, 79 steps per epoch). L3D: samples from GenerateTMSInputs / GenerateCorrelatedData, which drop
# all-zero rows (toy_models/data.py); MSEVectorLoss (utils/loss.py) with the reference drawn with replacement from
# the same batch of 32; top_k ≈ 1 while `epoch <= warm_start_epochs` (eigenmodel/trainer.py), so their flags 1
# (TMCS), none (high-rank: 0) and 10 (x²) keep every coefficient for 2, 1 and 11 epochs. After every step
# `normalize_low_ranks` (eigenmodel/eigenmodel.py) divides each subnetwork by the square root of Σ_t ‖d_t‖ over
# its tensors, which drives Σ_t ‖d_t‖ to 1 ("sum"), not Σ_t ‖d_t‖² as the text's unit norm.
# The paper_text toys' conventions are our earlier choices (`VariantExperiment.conventions`).
AUTHORS_CONVENTIONS = Conventions(
    toy_weight_decay=1e-3, toy_batch_size=128, drop_zero_inputs=True, divergence="output_times_residual",
    reference="random_or_self", reference_pool="batch", warm_start_epochs={"tmcs": 2, "high_rank": 1, "square": 11},
    decoder_norm="sum",
)
