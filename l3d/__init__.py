"""l3d: Local Loss Landscape Decomposition.

The method, torch only: divergences, Tucker directions, per-sample gradients (`l3d.gradients`), the
decomposition and its loss with BatchTopK, training, impact, interventions and checkpoints. The toy
models, ground-truth scoring, story transformer and CNN live in `l3d.experiments`; figures, tables and
metrics in `l3d.report`; atomic writes, devices, torchrun and parameter checks in `l3d.runtime`.
A model to try it on in a few lines: `l3d.examples.tms()` (and `python -m l3d.examples.quickstart`).
"""
from . import checkpoint as checkpoint  # re-exported: l3d.checkpoint after `import l3d`
from .decomposition import Decomposition, LossParts, batch_top_k
from .divergences import divergence, reference_outputs
from .gradients import DenseGradients, GradientCollector, call_with
from .history import History
from .impacts import impact, top_samples
from .interventions import intervene, intervention_sweep, output_derivative, top_affected_outputs
from .params import select_tensors
from .pipeline import L3DConfig, Run, decompose, sweep
from .runtime.device import resolve_device
from .source import GradientSource
from .train import evaluate, fit
from .tucker import Tucker

__all__ = [
    "Decomposition", "LossParts", "batch_top_k", "resolve_device", "divergence", "reference_outputs",
    "DenseGradients", "GradientCollector", "call_with", "impact", "top_samples", "intervene", "intervention_sweep",
    "output_derivative", "top_affected_outputs", "select_tensors", "GradientSource", "History",
    "evaluate", "fit", "Tucker", "L3DConfig", "Run", "decompose", "sweep",
]
