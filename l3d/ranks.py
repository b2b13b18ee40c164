"""A decomposition's rank argument, checked: an int for every tensor, a tuple with one rank per mode, or a dict
name -> rank (see `Decomposition`; `l3d.tucker.tucker_ranks` turns each into per-mode ranks)."""
from __future__ import annotations

from .runtime.validate import is_int

Rank = int | tuple[int, ...]


def as_rank(name: str, rank: object) -> Rank:
    """A rank as an int or a tuple of ints (NumPy integers converted); a TypeError naming `name` otherwise."""
    if is_int(rank):
        return int(rank)
    if isinstance(rank, (tuple, list)) and rank and all(is_int(r) for r in rank):
        return tuple(int(r) for r in rank)
    raise TypeError(f"{name} must be an int, a tuple of ints (one per mode) or a dict name -> rank, "
                    f"got {rank!r} ({type(rank).__name__})")


def check_rank(shapes: dict[str, tuple[int, ...]], rank) -> None:
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

