"""The L3D decomposition: n_v subnetworks, each an encoder and a decoder direction in parameter space.

For per-sample gradients g_i (N samples) and subnetworks k = 1..C:
    c_ik = <e_k, g_i>                       encoder coefficients
    m_ik = batch_top_k(|c|, k)              keep the largest fraction k over the whole batch
    ĝ_i  = Σ_k m_ik c_ik d_k                reconstruction
    L    = Σ_i ||g_i − ĝ_i||² / Σ_i ||g_i||²
The loss is computed from projections and the decoder Gram matrix G_kl = <d_k, d_l>, so ĝ is never built:
    ||g_i − ĝ_i||² = ||g_i||² − 2 Σ_k c̃_ik <d_k, g_i> + c̃_iᵀ G c̃_i,   c̃ = m ⊙ c.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .tucker import Tucker, tucker_ranks

Rank = int | tuple[int, ...]


def batch_top_k(c: Tensor, k: float, distributed: bool = False) -> Tensor:
    """Mask (same shape as c) keeping the round(k · c.numel()) entries of largest |c|, at least one.

    distributed: c holds this process's rows of a batch spread over processes; the top k is taken over the
    whole batch (see l3d.distributed).
    """
    if not 0 < k <= 1:
        raise ValueError(f"top_k is the fraction of coefficients kept and must lie in (0, 1], got {k}")
    if distributed:
        from .distributed import gather_rows

        everything, ours = gather_rows(c.detach())
        return batch_top_k(everything, k)[ours]
    n_keep = max(1, round(k * c.numel()))
    if n_keep == c.numel():
        return torch.ones_like(c, dtype=torch.bool)
    idx = c.detach().abs().flatten().topk(n_keep, sorted=False).indices
    mask = torch.zeros(c.numel(), dtype=torch.bool, device=c.device)
    mask[idx] = True
    return mask.view_as(c)


@dataclass
class LossParts:
    """Pieces of one batch's loss: the loss, its numerator and denominator, and the top-k mask."""

    loss: Tensor
    error: Tensor      # Σ_i ||g_i − ĝ_i||²
    total: Tensor      # Σ_i ||g_i||²
    mask: Tensor       # (N, C) bool


class Decomposition(nn.Module):
    """C subnetworks over named parameter tensors, with Tucker-form encoder and decoder directions.

    Args:
        shapes: name -> shape of each decomposed parameter tensor (order is kept everywhere).
        n_subnetworks: C.
        rank: one rank for every tensor, or name -> rank, where a rank is an int or a tuple with one
            entry per mode. An int is capped per mode at the mode's size (a 3×3 kernel stays full at
            rank 10) but may not exceed every dimension of every tensor it is given for; a tuple must
            fit each mode.
        top_k: fraction of coefficients BatchTopK keeps (0.1 in the paper).
        seed: seed of the random initialization.
    """

    def __init__(
        self,
        shapes: dict[str, tuple[int, ...]],
        n_subnetworks: int,
        rank: Rank | dict[str, Rank] = 1,
        top_k: float = 0.1,
        seed: int | None = None,
    ):
        super().__init__()
        if isinstance(n_subnetworks, bool) or not isinstance(n_subnetworks, int) or n_subnetworks < 1:
            raise ValueError(f"n_subnetworks must be at least 1, got {n_subnetworks}")
        if not 0 < top_k <= 1:
            raise ValueError(f"top_k is the fraction of coefficients kept and must lie in (0, 1], got {top_k}")
        if not shapes:
            raise ValueError("a decomposition needs at least one parameter tensor")
        if isinstance(rank, dict):
            missing, extra = set(shapes) - set(rank), set(rank) - set(shapes)
            if missing:
                raise ValueError(f"rank dict lacks tensors {sorted(missing)}; give a rank for every tensor")
            if extra:
                raise ValueError(f"rank dict names tensors {sorted(extra)} that are not decomposed (tensors: {list(shapes)})")
        self.shapes = {name: tuple(shape) for name, shape in shapes.items()}
        self.names = list(self.shapes)
        self.n_subnetworks = n_subnetworks
        self.top_k = top_k
        _check_rank(self.shapes, rank)
        self.ranks = {
            name: tucker_ranks(shape, rank[name] if isinstance(rank, dict) else rank)
            for name, shape in self.shapes.items()
        }
        if seed is not None:
            torch.manual_seed(seed)
        self.decoder = nn.ModuleList(Tucker(n_subnetworks, s, self.ranks[n]) for n, s in self.shapes.items())
        self.encoder = nn.ModuleList(Tucker(n_subnetworks, s, self.ranks[n]) for n, s in self.shapes.items())
        self.normalize_decoder_()
        self.encoder.load_state_dict(self.decoder.state_dict())

    @property
    def config(self) -> dict:
        return {
            "shapes": {n: list(s) for n, s in self.shapes.items()},
            "n_subnetworks": self.n_subnetworks,
            "rank": {n: list(r) for n, r in self.ranks.items()},
            "top_k": self.top_k,
        }

    # --- directions -----------------------------------------------------------------------------
    def encoder_directions(self) -> dict[str, Tensor]:
        """e_k per tensor: name -> (C, *shape)."""
        return {n: t.full() for n, t in zip(self.names, self.encoder)}

    def decoder_directions(self) -> dict[str, Tensor]:
        """d_k per tensor: name -> (C, *shape)."""
        return {n: t.full() for n, t in zip(self.names, self.decoder)}

    def decoder_gram(self) -> Tensor:
        """G_kl = <d_k, d_l> summed over tensors: (C, C)."""
        return sum(t.inner(t) for t in self.decoder)

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale every decoder direction to unit norm over all its tensors."""
        norms = sum(t.sq_norms() for t in self.decoder).clamp_min(1e-30).sqrt()
        for t in self.decoder:
            t.scale_(1 / norms)

    # --- the objective --------------------------------------------------------------------------
    def encode(self, grads) -> Tensor:
        """c_ik = <e_k, g_i>: (N, C)."""
        return grads.project(self.encoder)

    def loss(self, grads, top_k: float | None = None, distributed: bool = False) -> LossParts:
        """The normalized reconstruction loss of a batch of gradients (see module docstring).

        distributed: the batch is spread over processes and BatchTopK is taken over all of it; the loss,
        error and total are then this process's part (l3d.train sums them over processes).
        """
        c = self.encode(grads)                       # (N, C)
        p = grads.project(self.decoder)              # (N, C)  <d_k, g_i>
        total = grads.sq_norms().sum()
        mask = batch_top_k(c, self.top_k if top_k is None else top_k, distributed)
        ct = c * mask
        gram = self.decoder_gram()
        error = total - 2 * (ct * p).sum() + ((ct @ gram) * ct).sum()
        return LossParts(loss=error / total, error=error, total=total, mask=mask)

    def check_shapes(self, shapes: dict[str, tuple[int, ...]], what: str = "the model") -> None:
        """Raise a ValueError unless `shapes` (name -> shape, e.g. `collector.shapes`) are this decomposition's."""
        shapes = {n: tuple(s) for n, s in shapes.items()}
        if shapes == self.shapes:
            return
        problems = [f"{n}: decomposition {self.shapes[n]}, {what} {shapes[n]}" for n in self.shapes if n in shapes and shapes[n] != self.shapes[n]]
        if set(self.shapes) - set(shapes):
            problems.append(f"only in the decomposition: {sorted(set(self.shapes) - set(shapes))}")
        if set(shapes) - set(self.shapes):
            problems.append(f"only in {what}: {sorted(set(shapes) - set(self.shapes))}")
        if not problems:
            problems.append(f"tensor order differs: decomposition {self.names}, {what} {list(shapes)}")
        raise ValueError(f"the decomposition does not fit {what}'s tensors: " + "; ".join(problems))

    # --- saving ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write `path`/decomposition.safetensors and `path`/config.json, each atomically."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        _atomic_write(path / "decomposition.safetensors", lambda f: save_file(tensors, f))
        _atomic_write(path / "config.json", lambda f: Path(f).write_text(json.dumps(self.config, indent=1)))

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        map_location: str | torch.device = "cpu",
        shapes: dict[str, tuple[int, ...]] | None = None,
    ) -> Decomposition:
        """Read a decomposition written by `save` (no pickle), in the dtype it was saved in.

        shapes: name -> shape of the model's tensors (e.g. `collector.shapes`); loading refuses a
        decomposition of other tensors.
        """
        path = Path(path)
        for f in ("config.json", "decomposition.safetensors"):
            if not (path / f).exists():
                raise FileNotFoundError(f"{path / f} not found: expected a folder written by Decomposition.save")
        try:
            config = json.loads((path / "config.json").read_text())
            decomposition = cls(
                {n: tuple(s) for n, s in config["shapes"].items()},
                config["n_subnetworks"],
                {n: tuple(r) for n, r in config["rank"].items()},
                config["top_k"],
            )
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{path / 'config.json'} is not a decomposition config ({type(e).__name__}: {e})") from e
        tensors = load_file(path / "decomposition.safetensors", device=str(map_location))
        expected = {k: tuple(v.shape) for k, v in decomposition.state_dict().items()}
        found = {k: tuple(v.shape) for k, v in tensors.items()}
        if found != expected:
            wrong = sorted(k for k in expected.keys() & found.keys() if expected[k] != found[k])
            raise ValueError(
                f"{path / 'decomposition.safetensors'} does not match {path / 'config.json'}: "
                f"missing {sorted(expected.keys() - found.keys())}, unexpected {sorted(found.keys() - expected.keys())}, "
                f"wrong shape {[(k, found[k], expected[k]) for k in wrong]}"
            )
        if shapes is not None:
            decomposition.check_shapes(shapes)
        decomposition.to(device=map_location, dtype=next(iter(tensors.values())).dtype)
        decomposition.load_state_dict(tensors)
        return decomposition


def _check_rank(shapes: dict[str, tuple[int, ...]], rank) -> None:
    """One int rank caps at each mode's size but must fit some tensor; a per-tensor int must fit that tensor."""
    if isinstance(rank, int):
        largest = max(max(s, default=1) for s in shapes.values())
        if rank > largest:
            raise ValueError(
                f"rank {rank} exceeds every dimension of every tensor (largest {largest}): "
                f"use a rank of at most {largest}"
            )
        return
    if isinstance(rank, dict):
        for name, r in rank.items():
            if isinstance(r, int) and name in shapes and r > max(shapes[name], default=1):
                raise ValueError(
                    f"rank {r} for tensor {name!r} exceeds every dimension of its shape {shapes[name]}: "
                    f"use a rank of at most {max(shapes[name])}"
                )


def _atomic_write(target: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename over `target`."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
