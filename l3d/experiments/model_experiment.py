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

from torch import Tensor, nn

from ..decomposition import Decomposition
from ..gradients import default_forward
from ..impacts import impact, top_samples
from ..pipeline import L3DConfig, Run
from ..runtime.settings import Settings, bounded
from .causal import DELTAS, THRESHOLD, causal_selectivity, other_samples

SOURCES = ("embedded", "paper")


@dataclass(frozen=True)
class ModelExperiment(Settings):
    """Settings every model notebook has: the source ("embedded": a small model l3d trains and caches;
    "paper": the paper's model and data), seed, device, output folder, the decomposition (`l3d`), and how
    subnetworks are read on held-out inputs: impact over n_ref references, the n_top samples of largest
    impact, the n_logits outputs that moving along a subnetwork's direction changes most, and their causal
    selectivity (`l3d.experiments.causal`): the step sizes `deltas` along unit-norm decoder directions and
    `selectivity_threshold`, the multiple of its random twin's ρ from which a subnetwork counts as selective."""

    DEFAULTS: ClassVar[dict[str, dict]] = {}   # source -> values of the parameters left at None

    source: str = bounded("embedded", choices=SOURCES)
    seed: int = bounded(0, low=0)
    device: str = bounded("auto", choices=("auto", "cpu", "cuda"))
    out_dir: str = "figures"
    n_ref: int = bounded(None, low=1)
    n_top: int = bounded(10, low=1)
    n_logits: int = bounded(5, low=1)
    deltas: list[float] = DELTAS
    selectivity_threshold: float = bounded(THRESHOLD, low=1)
    l3d: L3DConfig = dataclasses.field(default_factory=L3DConfig)

    def check(self) -> list[str]:
        if not self.deltas or 0 in self.deltas:
            return [f"deltas must be non-zero step sizes δ, got {list(self.deltas)}"]
        return []

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


def selectivity_metrics(model: nn.Module, decomposition: Decomposition, inputs: Tensor, top: Tensor, p_act: Tensor,
                        settings: ModelExperiment, n_other_items: int, *, forward=None,
                        sequence: bool = False) -> dict:
    """`causal_selectivity` of the live subnetworks (p_act > 0) on the held-out `inputs` for metrics.json: their top
    samples `top` (C, n_top) against every sample of n_other_items items (all items when there are fewer) drawn with
    the settings' seed (`other_samples`), the settings' deltas and selectivity_threshold, random twins drawn from the
    settings' seed. `forward(model, inputs)` gives the outputs; None: model(inputs)."""
    per_item = inputs.shape[1] if sequence else 1
    others = other_samples(inputs.shape[0], min(n_other_items, inputs.shape[0]), per_item, seed=settings.seed)
    return causal_selectivity(model, decomposition, inputs, top, p_act > 0, others, settings.deltas,
                              settings.selectivity_threshold, seed=settings.seed, forward=forward or default_forward,
                              sequence=sequence)
