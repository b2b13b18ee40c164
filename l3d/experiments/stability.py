"""The stability check: does a notebook's outcome survive a perturbation of the floating point?

Another machine trains the same toys to slightly different weights (other kernels: the toy losses agree to 4
digits) and rounds every step of L3D differently. On the toys' landscapes that can move a decomposition into
another basin: 02's seed 1 loses an input's subnetwork on one CPU and keeps it on another. The check reruns every
decomposition `perturbations` times with the decomposed tensors of the model and the decomposition's start both
perturbed by a relative `scale` (p ← p·(1 + scale·ε), ε ~ N(0, 1), a draw of its own per rerun: 1e-6 leaves the
method and every printed digit of the model as they are) and compares each seed's discrete outcome (matched or
not, features recovered, live subnetworks) and the headline medians with the unperturbed run. Perturbing the start
alone is not enough: in 02 it moved no seed in 15 reruns, where perturbing the toy as well moved seed 1 in 1 of 3.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..runtime.medians import median
from ..runtime.validate import SEED_MAX


def perturbed(model: nn.Module, scale: float, seed: int, tensors: Sequence[str] | None = None) -> nn.Module:
    """A copy of `model` whose parameters (those named in `tensors`; None: all) are p·(1 + scale·ε), ε ~ N(0, 1)
    drawn from `seed`. scale 0 returns the model itself."""
    if not scale:
        return model
    other = copy.deepcopy(model)
    generator = torch.Generator().manual_seed((seed * 7919 + 17) % SEED_MAX)
    with torch.no_grad():
        for name, p in other.named_parameters():
            if tensors is None or name in tensors:
                noise = torch.randn(p.shape, generator=generator, dtype=torch.float64)
                p.mul_(1 + scale * noise.to(p.device, p.dtype))
    return other


@dataclass
class Stability:
    """Per seed, its outcome unperturbed and under every perturbation; the seeds whose outcome changed, and per
    headline key the largest move of its median over the seeds."""

    keys: list[str]                       # what makes an outcome
    per_seed: list[dict] = field(default_factory=list)   # {"seed", "outcome", "perturbed": [outcome...], "changed"}
    median_shift: dict[str, float] = field(default_factory=dict)

    @property
    def changed(self) -> list[int]:
        """The seeds whose outcome changed under some perturbation."""
        return [row["seed"] for row in self.per_seed if row["changed"]]

    @property
    def changed_rate(self) -> float:
        """The share of (seed, perturbation) reruns whose outcome differs from the seed's unperturbed one."""
        pairs = [(row["outcome"], other) for row in self.per_seed for other in row["perturbed"]]
        return sum(a != b for a, b in pairs) / max(len(pairs), 1)

    def to_dict(self) -> dict:
        return {"outcome_keys": self.keys, "per_seed": self.per_seed, "changed_seeds": self.changed,
                "n_changed": len(self.changed), "n_seeds": len(self.per_seed), "changed_rate": self.changed_rate,
                "median_shift": self.median_shift}

    def rows(self) -> list[dict]:
        """One table row per seed (`l3d.report.tables.markdown_table` shows them): its outcome unperturbed, under
        each perturbation, and whether it changed."""
        show = lambda outcome: ", ".join(str(v) for v in outcome)   # noqa: E731
        return [{"seed": row["seed"], f"outcome ({', '.join(self.keys)})": show(row["outcome"]),
                 **{f"perturbed {i + 1}": show(o) for i, o in enumerate(row["perturbed"])}, "changed": row["changed"]}
                for row in self.per_seed]

    def describe(self) -> str:
        """One line: how many seeds changed outcome, and the largest median shift."""
        n = len(self.per_seed)
        reruns = len(self.per_seed[0]["perturbed"]) if self.per_seed else 0
        shift = max(self.median_shift.items(), key=lambda kv: kv[1], default=("-", 0.0))
        moved = f"seeds {self.changed}" if self.changed else "none"
        return (f"stability ({reruns} perturbed reruns of each of {n} seeds): outcome ({', '.join(self.keys)}) changed "
                f"for {len(self.changed)} of {n} seeds ({moved}); largest median shift {shift[1]:.4f} ({shift[0]})")


def compare(rows: Sequence[dict], perturbed_rows: Sequence[Sequence[dict]], keys: Sequence[str],
            median_keys: Sequence[str] = (), outcome: Callable[[dict], object] | None = None) -> Stability:
    """The check from scored rows: `rows` one per seed (with "seed"), `perturbed_rows` one list of such rows per
    perturbation in the same seed order; an outcome is the tuple of the rows' `keys` (or `outcome(row)`);
    median_keys: numbers whose median over seeds is compared."""
    outcome = outcome or (lambda row: [row[k] for k in keys])
    result = Stability(list(keys))
    for i, row in enumerate(rows):
        own = outcome(row)
        others = [outcome(p[i]) for p in perturbed_rows]
        result.per_seed.append({"seed": row["seed"], "outcome": own, "perturbed": others,
                                "changed": any(o != own for o in others)})
    for key in median_keys:
        base = median(float(r[key]) for r in rows)
        result.median_shift[key] = max((abs(median(float(r[key]) for r in p) - base)
                                        for p in perturbed_rows), default=0.0)
    return result
