"""CPU threads for L3D's work: one thread for small models, torch's default for large ones.

torch runs every CPU operation on as many threads as the machine has cores. For the toy models and
small decompositions each operation is far too small to split: the threads spend their time waiting
for each other, and on a machine whose cores other processes are using a run gets 2-10 times slower
(benchmarks/threads.py measures it). `l3d.fit`, `l3d.evaluate`, `l3d.impact`, toy training and the
command line therefore run with

  1. the `threads` argument (`--threads` on the command line), when given;
  2. else $L3D_THREADS, when set;
  3. else $OMP_NUM_THREADS, when set (`make figures` sets 1; torchrun sets 1 unless told otherwise);
  4. else one thread when the work per step is below `SMALL_WORK`, and torch's own setting above it.

The work per step is the number of per-sample gradient entries a step handles: samples per batch
(items × positions for sequence models) times the number of decomposed parameters
(`GradientSource.work`); for toy training, models × batch × parameters per model.
The thread count is set for the duration of the call and restored after it.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

ENV_VAR = "L3D_THREADS"
# Per-step work (samples × decomposed parameters) below which l3d uses one thread. Measured with other processes
# busy on a 2-core machine (benchmarks/threads.py, results/threads_cpu.json), two threads made every setting from
# TMS (800) to notebook 05's embedded GPT-Neo block (1.06 M) 4-26 times slower per step; below 4 M are all the
# notebooks' embedded settings (so results equal `make figures`' one-thread runs); the paper's models (TinyStories-8M's
# attention block: 67 M) get torch's threads.
SMALL_WORK = 4_000_000


def _from_env(name: str, strict: bool) -> int | None:
    """A positive thread count from environment variable `name` (OMP's "4,2" lists: the first), or None if unset."""
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        n = int(value.split(",")[0])
    except ValueError:
        n = 0
    if n >= 1:
        return n
    if strict:
        raise ValueError(f"${name} must be a positive number of threads, got {value!r}")
    return None


def default_threads(work: float) -> int | None:
    """Threads for `work` (per-sample gradient entries per step) when the caller names none: $L3D_THREADS,
    else $OMP_NUM_THREADS, else 1 for work below SMALL_WORK, else None (keep torch's setting)."""
    for name, strict in ((ENV_VAR, True), ("OMP_NUM_THREADS", False)):
        n = _from_env(name, strict)
        if n is not None:
            return n
    return 1 if work < SMALL_WORK else None


@contextmanager
def cpu_threads(n: int | None) -> Iterator[int]:
    """Run the block with torch's intra-op thread count set to `n` (None: as it is), then restore it.

    Yields the thread count in effect inside the block.
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"threads must be a positive int or None (the default rule), got {n!r}")
    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def threads_for(work: float, threads: int | None = None):
    """`cpu_threads` with `threads` if given, else the default for `work` (`default_threads`)."""
    return cpu_threads(threads if threads is not None else default_threads(work))
