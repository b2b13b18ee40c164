"""Ready-made models with their data, to decompose in a few lines (needs the `experiments` extra).

    import l3d
    from l3d.examples import tms

    model, tensors, inputs, held_out = tms()
    run = l3d.decompose(model, inputs, tensors, l3d.L3DConfig(epochs=100, lr_decay_every=10))

`tms()` trains a toy model of superposition (Elhage et al., 2022; paper §4.1): n_features sparse features
stored in n_hidden < n_features dimensions and read back out, x̂ = ReLU(W_out W_in x + b). It is trained with
W_out = W_inᵀ and returned untied (W_in, W_out and b separate parameters), as L3D decomposes it, so the three
tensor names it returns are the model's own. Its computation is n_features sparsely active circuits:
on a sample where only feature i is on, only column i of W_in, row i of W_out and b_i matter; a good
decomposition has one subnetwork per feature.

`python -m l3d.examples.quickstart` runs that end to end (`make quickstart`), and `SNIPPET` is the README's
library example, run verbatim by the tests.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..runtime.validate import as_int, as_seed

TMS_TENSORS = ["W_in", "W_out", "b"]

# The README's library example, run verbatim by tests/test_examples.py; keep the two the same.
SNIPPET = '''\
import l3d
from l3d.examples import tms

model, tensors, inputs, held_out = tms()   # a trained toy model of superposition: 5 features in 2 dimensions
config = l3d.L3DConfig(n_subnetworks=5, rank=1, top_k=0.1, epochs=100, lr_decay_every=10)
run = l3d.decompose(model, inputs, tensors, config)   # tensors: ["W_in", "W_out", "b"], names or globs
run.history.reconstruction_error[-1]                  # the last epoch's error (the history has one per epoch)
run.history.dead                                      # the subnetworks never selected in the last epoch
run.evaluate(held_out)                                # error, P_act and dead subnetworks on held-out inputs
run.save("runs/mine")                                 # safetensors + config + run.json, no pickle

scores = l3d.impact(run.decomposition, run.collector, held_out, n_ref=10)        # (N, C): I(x_i, v_k)
best = l3d.top_samples(scores, n=10)                                             # (C, 10) sample indices
outputs = l3d.intervene(model, run.decomposition, 0, [-1.0, 0.0, 1.0], held_out)  # f(x; W0 + δ d_0)
'''


class Example(NamedTuple):
    """A model to decompose with its data: `l3d.decompose(model, inputs, tensors, config)`, then
    `run.evaluate(held_out)`. inputs, held_out: (N, n_features) samples of the data the model was trained on."""

    model: nn.Module
    tensors: list[str]
    inputs: Tensor
    held_out: Tensor


def tms(n_features: int = 5, n_hidden: int = 2, n_samples: int = 1000, n_held_out: int = 1000,
        p_active: float = 0.05, n_train: int = 2000, toy_epochs: int = 100, restarts: int = 4, seed: int = 0,
        progress: bool = False) -> Example:
    """A trained toy model of superposition, untied, with L3D samples and held-out samples.

    The toy: `restarts` initializations (torch.manual_seed(seed)) trained together on n_train samples with at
    least one feature on (each on with probability p_active, uniform on [0, 1]; all-zero samples dropped, as the
    paper trains) for toy_epochs epochs of batch 32 (AdamW lr 1e-3), the one with the lowest final training loss
    kept (a TMS sometimes leaves a feature out, its column of W_in decayed to zero: seed 0 with one initialization
    does). inputs (n_samples) and held_out (n_held_out): samples of the same distribution with all-zero ones kept,
    as notebook 01 decomposes (about (1 − p_active)^n_features of them, 77 % at the defaults, are all zero; a
    random reference is then mostly the model's resting output). Every draw follows from `seed`.
    tensors: ["W_in", "W_out", "b"], the untied model's parameters.
    """
    from ..experiments.toys import TMS, sparse_features, train_toys_best_of

    for name, value, low in (("n_features", n_features, 2), ("n_hidden", n_hidden, 1), ("n_samples", n_samples, 1),
                             ("n_held_out", n_held_out, 1), ("n_train", n_train, 32), ("toy_epochs", toy_epochs, 1),
                             ("restarts", restarts, 1)):
        if as_int(name, value) < low:
            raise ValueError(f"{name} must be at least {low}, got {value}")
    seed = as_seed("seed", seed)
    generator = torch.Generator().manual_seed(seed)
    train = sparse_features(n_train, n_features, p_active, generator=generator)
    inputs = sparse_features(n_samples, n_features, p_active, generator=generator, drop_zero=False)
    held_out = sparse_features(n_held_out, n_features, p_active, generator=generator, drop_zero=False)
    (toy,), _ = train_toys_best_of(lambda: TMS(n_features, n_hidden), [(train, train)], [seed], restarts=restarts,
                                   epochs=toy_epochs, batch_size=32, progress=progress)
    return Example(toy.untied(), list(TMS_TENSORS), inputs, held_out)
