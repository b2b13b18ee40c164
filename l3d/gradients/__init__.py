"""Per-sample divergence gradients g_i = ∇_W D(f(x_i; W), y_ref) at W = W0, and the batches that hold them.

collector.py   GradientCollector: computes them for the chosen tensors of any nn.Module (in eval mode)
calls.py       how it calls the model: eval mode, weights swapped in functionally, the outputs checked
discovery.py   what its first forward of an input shape shows: the factored modules' calls, the output head
dense.py       DenseGradients: a batch materialized, (N, n_w); StackedGradients: G of them as one (G, N, n_w)
factored.py    FactoredGradients: a batch kept as inputs and output-gradients of known modules
selfcheck.py   the collector's first-call check of its gradients against plain autograd
joint.py       several models of one architecture in one vectorized pass (sweeps over seeds)
"""
from .calls import call_with, default_forward, evaluating
from .collector import ENGINES, GradientCollector
from .dense import DenseGradients, StackedGradients
from .factored import FactoredGradients

__all__ = ["ENGINES", "GradientCollector", "call_with", "default_forward", "evaluating", "DenseGradients",
           "FactoredGradients", "StackedGradients"]
