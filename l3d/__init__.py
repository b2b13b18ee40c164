"""l3d: Local Loss Landscape Decomposition."""
from .decomposition import Decomposition, LossParts, batch_top_k
from .device import resolve_device
from .divergence import divergence, reference_outputs
from .gradients import DenseGradients, GradientCollector, call_with
from .impact import impact, top_samples
from .intervene import intervene, intervention_sweep, output_derivative, top_affected_outputs
from .params import select_tensors
from .train import GradientSource, History, evaluate, fit
from .validate import check_parameters
from . import checkpoint, distributed
from .tucker import Tucker

__all__ = [
    "Decomposition", "LossParts", "batch_top_k", "resolve_device", "divergence", "reference_outputs",
    "DenseGradients", "GradientCollector", "call_with", "impact", "top_samples", "intervene", "intervention_sweep",
    "output_derivative", "top_affected_outputs", "select_tensors", "GradientSource", "History",
    "evaluate", "fit", "Tucker", "check_parameters",
]
