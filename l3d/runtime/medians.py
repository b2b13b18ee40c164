"""The medians the library reports, each in one place.

`median`: the median of numbers, the mean of the two middle values for an even count (`statistics.median`). Every
median over seeds, runs and timings goes through it (metrics.json's "median" entries, the stability check's shifts,
the field benchmarks' summaries, the docs' check of them).

`lower_median`: the lower of the two middle values for an even count, no mean (torch's `Tensor.median`). The causal
selectivity's medians over subnetworks (`l3d.experiments.causal.summarize`) and the median line of
`l3d.report.training_plots.error_against` have always been this one; they keep it, so that no published number
moves. The causal-selectivity histogram (`l3d.report.model_plots.selectivity_histogram`) labels its medians with it
too, so the figure shows the numbers metrics.json holds. For an odd count the two agree.
"""
from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor


def median(values: Iterable[float]) -> float:
    """The median of `values` (at least one number): the middle one, or the mean of the two middle ones."""
    return statistics.median(values)


def lower_median(values: Tensor, dim: int | None = None) -> Tensor:
    """The lower median of a tensor's entries (dim None, a 0-d tensor) or along `dim`: the middle value, or the
    smaller of the two middle ones for an even count (torch's median; NaN if any entry is NaN)."""
    return values.median() if dim is None else values.median(dim).values
