"""l3d: Local Loss Landscape Decomposition.

The method, torch only: divergences, Tucker directions, per-sample gradients (`l3d.gradients`), the
decomposition and its loss with BatchTopK, training, impact, interventions and checkpoints. The toy
models, ground-truth scoring, story transformer and CNN live in `l3d.experiments`; figures, tables and
metrics in `l3d.report`; atomic writes, devices, torchrun and parameter checks in `l3d.runtime`.
A model to try it on in a few lines: `l3d.examples.tms()` (and `python -m l3d.examples.quickstart`).

The method's modules, in the order a reader meets them:
divergences.py    D(f(x), f(x_ref)) and how references are drawn
params.py         choosing the tensors to decompose
gradients/        per-sample gradients g_i of those tensors
tucker.py         low-rank tensors in Tucker form (the subnetworks' directions)
decomposition.py  `Decomposition`: encoders, decoders, `batch_top_k` and the loss
dense_loss.py     the loss's fast path for materialized gradients
ranks.py          the rank argument, checked
source.py         `GradientSource`: batches of gradients over a data set, fresh references every epoch
initialize.py     starting directions from the data
train.py          `fit`: Adam, learning-rate decay, warm start, checkpoints
passes.py         the passes without training: `evaluate`, an epoch's batches
history.py        what training records per epoch
resample.py       re-seeding the least needed subnetwork (our addition)
refit.py          re-estimating decoders from the samples each explains alone (our addition)
impacts.py        impact of subnetworks on samples, top samples
interventions.py  W0 + δ d_k: `intervene` and its sweeps
pipeline.py       `L3DConfig`, `decompose`, `sweep`: from a model to a saved decomposition
decomposition_files.py, checkpoint.py, fingerprints.py  saving, checkpoints, what a result depends on
cli.py            the command line (`python -m l3d`)
"""
from . import checkpoint as checkpoint  # re-exported: l3d.checkpoint after `import l3d`
from .decomposition import Decomposition, LossParts, batch_top_k
from .divergences import divergence, reference_outputs
from .gradients import DenseGradients, GradientCollector, call_with
from .history import History
from .impacts import impact, top_samples
from .interventions import intervene, intervention_sweep, output_derivative, top_affected_outputs
from .params import select_tensors
from .passes import evaluate
from .pipeline import L3DConfig, Run, decompose, sweep
from .runtime.device import resolve_device
from .source import GradientSource
from .train import fit
from .tucker import Tucker

__all__ = [
    "Decomposition", "LossParts", "batch_top_k", "resolve_device", "divergence", "reference_outputs",
    "DenseGradients", "GradientCollector", "call_with", "impact", "top_samples", "intervene", "intervention_sweep",
    "output_derivative", "top_affected_outputs", "select_tensors", "GradientSource", "History",
    "evaluate", "fit", "Tucker", "L3DConfig", "Run", "decompose", "sweep",
]
