"""What training records per epoch (`History`), and the sums over an epoch it is made from."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .decomposition import LossParts
from .dense_loss import as_divisor
from .runtime import distributed


@dataclass
class History:
    """Per epoch: reconstruction error (Σ error / Σ ||g||² over the epoch), learning rate, P_act per subnetwork,
    and, when fit ran with silence > 0, the dropped energy, of the coefficients BatchTopK dropped (Σ S / Σ ||g||²).
    resampled: with resample_every, one entry per resampling (`l3d.resample.Resampling.to_dict()` and its epoch)."""

    reconstruction_error: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    p_act: list[list[float]] = field(default_factory=list)
    dropped_energy: list[float] = field(default_factory=list)
    resampled: list[dict] = field(default_factory=list)

    @property
    def dead(self) -> list[int]:
        """The subnetworks never selected in the last epoch (P_act 0): a list of indices."""
        return [k for k, p in enumerate(self.p_act[-1]) if p == 0] if self.p_act else []

    def append(self, error: float, lr: float, p_act: list[float], dropped: float | None) -> None:
        """One epoch's record."""
        self.reconstruction_error.append(error)
        self.lr.append(lr)
        self.p_act.append(p_act)
        if dropped is not None:
            self.dropped_energy.append(dropped)

    def to_dict(self) -> dict:
        fields = {"reconstruction_error": self.reconstruction_error, "lr": self.lr, "p_act": self.p_act}
        if self.dropped_energy:
            fields["dropped_energy"] = self.dropped_energy
        if self.resampled:
            fields["resampled"] = self.resampled
        return fields

    @classmethod
    def from_dict(cls, d: dict) -> History:
        """Read `to_dict()`, also as written before the dropped energy had its name (key "silent")."""
        dropped = d.get("dropped_energy", d.get("silent", []))
        return cls(list(d["reconstruction_error"]), list(d["lr"]), [list(p) for p in d["p_act"]], list(dropped),
                   [dict(r) for r in d.get("resampled", [])])


def batch_summary(parts: LossParts) -> Tensor:
    """One batch's (error, total, active per subnetwork, [dropped energy]), summed over processes: (2 + C [+ 1],)
    float64; for a stack of M members (M errors, M totals, M·C active, [M dropped])."""
    pieces = [parts.error.detach().view(-1), parts.total.detach().view(-1), parts.mask.sum(0)]
    if parts.dropped_energy is not None:
        pieces.append(parts.dropped_energy.detach().view(-1))
    local = torch.cat(pieces).double()
    return distributed.all_sum_(local)


class EpochSums:
    """Sums over an epoch of every step's `batch_summary`, and the epoch's error, P_act and dropped energy from them."""

    def __init__(self, n_subnetworks: int, device, dropped_energy: bool = False, members: int = 1):
        self.sums = torch.zeros(members * (2 + dropped_energy) + n_subnetworks, device=device, dtype=torch.float64)
        self.dropped_energy = dropped_energy
        self.members = members
        self.samples = 0

    def add(self, summary: Tensor, n_samples: int) -> None:
        self.sums += summary
        self.samples += n_samples

    @property
    def errors(self) -> Tensor:
        """Σ ||g − ĝ||² of the pass so far, per member: (M,)."""
        return self.sums[:self.members]

    @property
    def totals(self) -> Tensor:
        """Σ ||g||² of the pass so far, per member: (M,)."""
        return self.sums[self.members:2 * self.members]

    def results(self) -> list[tuple[float, list[float], float | None]]:
        """Per member: reconstruction error and P_act of the epoch, and the dropped energy (over Σ ||g||²) if summed."""
        M = self.members
        active = self.sums[2 * M:len(self.sums) - M * self.dropped_energy].view(M, -1)
        p_act = (active / max(self.samples, 1)).tolist()
        dropped = ((self.sums[len(self.sums) - M:] / as_divisor(self.totals)).tolist() if self.dropped_energy
                   else [None] * M)
        return [((e / as_divisor(t)).item(), p, d) for e, t, p, d in zip(self.errors, self.totals, p_act, dropped)]

    def state_dict(self) -> dict:
        return {"sums": self.sums, "samples": self.samples}

    def load_state_dict(self, state: dict) -> None:
        self.sums.copy_(state["sums"])
        self.samples = state["samples"]
