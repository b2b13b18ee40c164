"""Per-sample divergence gradients g_i = ∇_W D(f(x_i; W), y_ref) at W = W0, and the batches that hold them.

collector.py   GradientCollector: computes them for the chosen tensors of any nn.Module (in eval mode)
dense.py       DenseGradients: a batch materialized, (N, n_w)
factored.py    FactoredGradients: a batch kept as inputs and output-gradients of known modules
selfcheck.py   the collector's first-call check of its gradients against plain autograd
"""
from .collector import ENGINES, GradientCollector, call_with, default_forward, evaluating
from .dense import DenseGradients
from .factored import FactoredGradients

__all__ = ["ENGINES", "GradientCollector", "call_with", "default_forward", "evaluating", "DenseGradients",
           "FactoredGradients"]
