"""Notebook 03, higher-rank circuits (paper §4.3): circuits that are groups of features switching on together.

n_groups groups of group_size features (`toys.group_features`); a one-hidden-layer network
n_groups·group_size → n_hidden → n_groups·group_size (`toys.high_rank_circuits`, variant `toy`) fit to y = A x,
A_ij ~ U(0, coefficient_max), so a group's circuit has rank up to group_size in each weight matrix. Every seed's
toy is decomposed at every Tucker rank of `ranks` (with the silence penalty when `silence` > 0, and again with
the paper's loss at each rank of `paper_loss_ranks`) and scored against the groups (`score_toy`), with the share
of each subnetwork's decoder direction in the first layer (what reads the inputs) and the number of groups with
a clean subnetwork (purity ≥ CLEAN); `medians_by_rank` aggregates over seeds.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..decomposition import Decomposition
from ..pipeline import Run
from ..runtime.settings import bounded
from .ground_truth import Recovery
from .toy_experiment import VariantExperiment, decompose_toy, medians, score_toy, train_toys
from .toys import feature_groups, group_features, high_rank_circuits, random_coefficients

MEDIAN_KEYS = ("reconstruction_error", "n_live", "clean_groups", "min_purity", "min_input_purity",
               "min_first_layer_share_matched", "max_first_layer_share_extra", "mmcs")
CLEAN = 0.8   # a group's subnetwork is clean when its purity is at least this
LOSSES = ("silence", "paper")   # the penalty on dropped coefficients (settings.l3d.silence), the paper's loss


@dataclass(frozen=True)
class HighRank(VariantExperiment):
    """Notebook 03's settings: the toy (n_groups, group_size, n_hidden, coefficient_max; n_groups None: 6 for the
    authors' toy as in their figures, 5 as the paper's text), the Tucker ranks decomposed (`ranks`; the figures
    show `show_rank`), the ranks also decomposed with the paper's loss when l3d.silence > 0 (`paper_loss_ranks`),
    and the scoring (n_probe inputs per group, n_ref references)."""

    n_groups: int = bounded(6, low=2)
    group_size: int = bounded(5, low=1)
    n_hidden: int = bounded(10, low=1)
    coefficient_max: float = bounded(3.0, low=0, open_low=True)
    ranks: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 3, 4, 5], metadata={"low": 1})
    show_rank: int = bounded(3, low=1)
    paper_loss_ranks: list[int] = dataclasses.field(default_factory=lambda: [3], metadata={"low": 1})
    n_probe: int = bounded(200, low=2)
    n_ref: int = bounded(10, low=1)

    KIND = "high_rank"
    CONVENTIONS = {"authors": {"n_groups": 6, "restarts": 1},
                   "paper_text": {"n_groups": 5, "drop_zero_inputs": True, "warm_start_epochs": 0, "restarts": 6,
                                  "toy_restarts": 1}}

    def check(self) -> list[str]:
        problems = super().check()
        if self.show_rank not in self.ranks:
            problems.append(f"ranks {self.ranks} must include show_rank {self.show_rank}")
        if not set(self.paper_loss_ranks) <= set(self.ranks):
            problems.append(f"paper_loss_ranks {self.paper_loss_ranks} must be among ranks {self.ranks}")
        return problems

    def decompositions(self) -> list[tuple[int, str]]:
        """The (rank, loss) decomposed per seed: every rank with l3d.silence ("silence", or "paper" when it is 0),
        then each of paper_loss_ranks with the paper's loss when l3d.silence > 0."""
        main = "silence" if self.l3d.silence > 0 else "paper"
        extra = [(rank, "paper") for rank in self.paper_loss_ranks] if main == "silence" else []
        return [(rank, main) for rank in self.ranks] + extra

    @property
    def n_features(self) -> int:
        return self.n_groups * self.group_size

    @property
    def groups(self) -> list[list[int]]:
        """The features of each group (the circuits)."""
        return feature_groups(self.n_groups, self.group_size)


def train_high_rank_toys(settings: HighRank, device: torch.device) -> tuple[list[nn.Module], list[list[float]]]:
    """One toy per seed: A (n_features, n_features) then n_train grouped inputs from the generator seeded
    10,000 + seed, targets x Aᵀ. Returns the models and their epoch losses."""
    n = settings.n_features

    def data(generator: torch.Generator) -> tuple[Tensor, Tensor]:
        A = random_coefficients(n, n, settings.coefficient_max, generator).to(device)              # (out, in)
        x = group_features(settings.training.n_train, settings.n_groups, settings.group_size, settings.training.p_active,
                           generator=generator).to(device)                                          # (n_train, in)
        return x, x @ A.T

    models, losses, _ = train_toys(settings, lambda: high_rank_circuits(n, settings.n_hidden, settings.toy), data,
                                   device)
    return models, losses


def group_samples(settings: HighRank, seed: int) -> Tensor:
    """The n_samples inputs L3D decomposes for `seed` (generator seeded 20,000 + seed): groups on with
    probability p_active; all-zero inputs dropped when drop_zero_inputs."""
    return group_features(settings.n_samples, settings.n_groups, settings.group_size, settings.training.p_active,
                          generator=torch.Generator().manual_seed(20_000 + seed), drop_zero=settings.drop_zero_inputs)


def first_layer_shares(decomposition: Decomposition, found: Recovery, first_layer: str = "layers.0.weight") -> dict:
    """How much of each subnetwork reads the inputs: the share ‖d_k^first‖² of its unit-norm decoder direction in
    the first layer (first_layer_share, per subnetwork), its lowest value over the subnetworks matched to a group
    and its highest over the live subnetworks matched to none (0 when there are none)."""
    direction = decomposition.decoder_directions()[first_layer].detach()        # (C, hidden, inputs)
    share = direction.flatten(1).pow(2).sum(1).tolist()
    matched = list(found.subnetwork_of.values())
    extra = [k for k in found.live if k not in matched]
    return {"first_layer_share": share,
            "min_first_layer_share_matched": min((share[k] for k in matched), default=0.0),
            "max_first_layer_share_extra": max((share[k] for k in extra), default=0.0)}


def decompose_ranks(settings: HighRank, models: list[nn.Module], toy_losses: list[list[float]], device: torch.device,
                    out_dir: str | os.PathLike) -> tuple[dict[tuple[int, int, str], tuple[Run, Recovery]], list[dict]]:
    """Every seed's toy decomposed at every (rank, loss) of `settings.decompositions()` (saved to
    out_dir/decomposition_seed{s}_rank{r}, with _paper_loss for the paper's loss beside the silence penalty) and
    scored against the groups as soon as it is trained. Returns {(seed, rank, loss): (run, recovery)} and one row
    per (seed, rank, loss) for metrics.json."""
    runs, per_seed = {}, []
    for s, toy, losses in zip(settings.seeds, models, toy_losses):
        inputs = group_samples(settings, s).to(device)
        for rank, loss in settings.decompositions():
            extra = {"silence": 0.0} if loss == "paper" else {}
            run = decompose_toy(settings, toy, inputs, s, progress=False, rank=rank, **extra)
            suffix = "_paper_loss" if extra else ""
            run.save(Path(out_dir) / f"decomposition_seed{s}_rank{rank}{suffix}")
            row, found = score_toy(run.decomposition, run.source, toy, settings.groups, s, settings.n_probe, settings.n_ref)
            per_seed.append({"seed": s, "rank": rank, "loss": loss, "toy_loss": losses[-1], **row,
                             "clean_groups": sum(p >= CLEAN for p in row["purity"]),
                             "final_training_error": run.history.reconstruction_error[-1],
                             **first_layer_shares(run.decomposition, found)})
            runs[s, rank, loss] = run, found
    return runs, per_seed


def medians_by_rank(settings: HighRank, per_seed: list[dict], loss: str) -> dict[int, dict]:
    """Per rank decomposed with `loss` ("silence" or "paper"), the medians over seeds of MEDIAN_KEYS, the number of
    seeds with one live subnetwork per group and the number with a clean subnetwork for every group."""
    by_rank = {rank: [r for r in per_seed if (r["rank"], r["loss"]) == (rank, loss)] for rank in settings.ranks}
    return {rank: {**medians(rows, MEDIAN_KEYS), "one_per_group_seeds": sum(r["one_per_circuit"] for r in rows),
                   "all_clean_seeds": sum(r["clean_groups"] == settings.n_groups for r in rows)}
            for rank, rows in by_rank.items() if rows}


def errors_by_seed(settings: HighRank, per_seed: list[dict]) -> list[list[float]]:
    """(n_seeds, n_ranks) reconstruction errors of the decompositions at every rank, for `plots.error_against`."""
    main = settings.decompositions()[0][1]
    error = {(r["seed"], r["rank"]): r["reconstruction_error"] for r in per_seed if r["loss"] == main}
    return [[error[s, rank] for rank in settings.ranks] for s in settings.seeds]


def p_act_labels(found: Recovery, n_subnetworks: int) -> list[str]:
    """Bar labels for `plots.p_act_bars`: the subnetwork's index, and "g<group>" below it when it is matched."""
    group_of = {k: g for g, k in found.matches}
    return [f"{k}" + (f"\ng{group_of[k]}" if k in group_of else "") for k in range(n_subnetworks)]
