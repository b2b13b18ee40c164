"""What the model notebooks (05 transformer, 06 CNN) share: their settings, the numbers of a fit, and the top
held-out samples of every subnetwork.

A notebook's settings are one `ModelExperiment` subclass built from its papermill parameters with
`from_parameters(globals())`: parameters left at None take the source's values (the subclass's DEFAULTS,
e.g. `l3d.experiments.transformer.SETTINGS`), and the decomposition (`L3DConfig`, parameters under their
own names) gets the settings that follow from the others (`l3d_config`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

from ..impacts import impact, top_samples
from ..pipeline import L3DConfig, Run
from ..runtime.settings import Settings, bounded

SOURCES = ("embedded", "paper")


@dataclass(frozen=True)
class ModelExperiment(Settings):
    """Settings every model notebook has: the source ("embedded": a small model l3d trains and caches;
    "paper": the paper's model and data), seed, device, output folder, the decomposition (`l3d`), and how
    subnetworks are read on held-out inputs: impact over n_ref references, the n_top samples of largest
    impact, the n_logits outputs that moving along a subnetwork's direction changes most."""

    DEFAULTS: ClassVar[dict[str, dict]] = {}   # source -> values of the parameters left at None

    source: str = bounded("embedded", choices=SOURCES)
    seed: int = bounded(0, low=0)
    device: str = bounded("auto", choices=("auto", "cpu", "cuda"))
    out_dir: str = "figures"
    n_ref: int = bounded(None, low=1)
    n_top: int = bounded(10, low=1)
    n_logits: int = bounded(5, low=1)
    l3d: L3DConfig = dataclasses.field(default_factory=L3DConfig)

    def l3d_config(self, parameters: Mapping[str, Any]) -> L3DConfig:
        """The decomposition's settings: the L3D parameters with those that follow from this class's fields."""
        return L3DConfig.from_parameters(parameters)

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> ModelExperiment:
        """The settings from a notebook's parameters; those left at None take DEFAULTS[source]'s values."""
        source = parameters.get("source", "embedded")
        if source not in SOURCES:
            raise ValueError(f"bad {cls.__name__} settings: source must be one of {list(SOURCES)}, got {source!r}")
        filled = {**parameters, **{k: v for k, v in cls.DEFAULTS.get(source, {}).items() if parameters.get(k) is None}}
        own = super().from_parameters(filled, l3d=L3DConfig())   # checks this class's own fields first
        return dataclasses.replace(own, l3d=own.l3d_config(filled))


def fit_metrics(run: Run, test_inputs: Tensor) -> dict:
    """The fit's numbers for metrics.json: reconstruction error (last epoch, and on held-out `test_inputs` with
    `run.evaluate`), the fraction of dead subnetworks, and the history."""
    history = run.history
    return {
        "reconstruction_error": history.reconstruction_error[-1],
        "test_reconstruction_error": run.evaluate(test_inputs)["reconstruction_error"],
        "dead_fraction": len(history.dead) / run.config.n_subnetworks,
        "history": history.to_dict(),
    }


def held_out_top(run: Run, inputs: Tensor, settings: ModelExperiment) -> tuple[Tensor, Tensor]:
    """The impact of every subnetwork on every sample of `inputs` (n_ref references drawn with the settings' seed),
    (N, C), and each subnetwork's n_top samples with the largest impact, best first: (C, n_top) indices, on the CPU."""
    scores = impact(run.decomposition, run.collector, inputs, n_ref=settings.n_ref, seed=settings.seed)   # (N, C)
    return scores, top_samples(scores, settings.n_top).cpu()
