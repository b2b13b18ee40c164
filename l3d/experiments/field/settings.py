"""Notebook 07's settings: the TMS settings by name, how the toys are trained (`TMSTraining`), the residual MLP
(`ResidSettings`), the sparser-samples variant (`SparseSamples`), the whole experiment (`FieldExperiment`) and
each TMS setting's own values as one object (`BenchmarkSetting`, from `FieldExperiment.benchmark`)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ...pipeline import L3DConfig
from ...runtime.settings import Settings, bounded

TMS_SIZES = {"5-2": (5, 2), "40-10": (40, 10)}


def parse_tms(setting: str) -> tuple[int, int, bool]:
    """(n_features, n_hidden, identity hidden layer) of a TMS setting "5-2", "5-2-id", "40-10" or "40-10-id"."""
    size, identity = (setting[:-3], True) if setting.endswith("-id") else (setting, False)
    if size not in TMS_SIZES:
        raise ValueError(f"unknown TMS setting {setting!r}: use one of "
                         f"{sorted(TMS_SIZES) + [s + '-id' for s in sorted(TMS_SIZES)]}")
    return (*TMS_SIZES[size], identity)


@dataclass(frozen=True)
class TMSTraining(Settings):
    """How the TMS toys are trained (SPD's train_tms.py: 10,000 steps, lr 5e-3, batch 1024 for 5-2 and 8192 for
    40-10, features on with probability 0.05). restarts (restarts_40_10 for 40-10): initializations per seed, the
    lowest final loss kept (SPD: 1, one hand-picked run per toy)."""

    steps: int = bounded(10_000, low=1)
    lr: float = bounded(5e-3, low=0, open_low=True)
    batch_size: int = bounded(1024, low=1)
    batch_size_40_10: int = bounded(8192, low=1)
    restarts: int = bounded(4, low=1)
    restarts_40_10: int = bounded(1, low=1)
    p_active: float = bounded(0.05, low=0, high=1, open_low=True, unprefixed=True)


@dataclass(frozen=True)
class ResidSettings(Settings):
    """The residual-MLP toy (SPD's 1-layer config: 100 features, d_embed 1000, 50 neurons, p 0.01, 1000 steps of
    2048, lr 3e-3 cosine) and its decomposition: n_subnetworks = n_features, n_samples L3D samples, top_k,
    epochs, lr decayed every epochs / 10; the notebook's other L3D settings."""

    n_features: int = bounded(100, low=2)
    d_embed: int = bounded(1000, low=2)
    d_mlp: int = bounded(50, low=1)
    p_active: float = bounded(0.01, low=0, high=1, open_low=True)
    steps: int = bounded(1000, low=1)
    batch_size: int = bounded(2048, low=1)
    lr: float = bounded(3e-3, low=0, open_low=True)
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    n_samples: int = bounded(2000, low=2)
    top_k: float = bounded(0.02, low=0, high=1, open_low=True)
    epochs: int = bounded(50, low=1)


@dataclass(frozen=True)
class SparseSamples(Settings):
    """The sparser-samples variant (ours; off by default): the 40-feature settings named here (those among
    tms_settings) decomposed again, on n_samples L3D samples per seed with features on with probability p_active
    (the toy's data: 0.05), BatchTopK's top_k and its own epochs, everything else as in the main runs. Fewer
    samples carry two or more features, whose gradients' cross terms no one feature's subnetwork can reconstruct
    (notebook 07, §7)."""

    settings: list[str] = dataclasses.field(default_factory=list)
    p_active: float = bounded(0.01, low=0, high=1, open_low=True)
    n_samples: int = bounded(8000, low=2)
    top_k: float = bounded(0.01, low=0, high=1, open_low=True)
    epochs: int = bounded(40, low=1)


@dataclass(frozen=True)
class BenchmarkSetting:
    """One TMS benchmark setting ("5-2", "5-2-id", "40-10" or "40-10-id"): all that differs between them. The toy
    (n_features, n_hidden, an identity hidden layer, zero_bias: trained from a zero bias, as SPD's 40-10), its
    training (toy_batch_size, toy_restarts initializations per seed), its L3D samples (n_samples per seed, features
    on with probability p_active) and its own L3D settings on top of the shared ones (epochs, top_k, restarts;
    None: the shared one). `FieldExperiment.benchmark` builds it from the notebook's parameters."""

    name: str
    n_features: int
    n_hidden: int
    identity: bool
    zero_bias: bool
    toy_batch_size: int
    toy_restarts: int
    n_samples: int
    p_active: float
    epochs: int | None = None
    top_k: float | None = None
    restarts: int | None = None

    def l3d_changes(self) -> dict:
        """The setting's own L3D settings (those of epochs, top_k and restarts that it sets)."""
        own = {"epochs": self.epochs, "top_k": self.top_k, "restarts": self.restarts}
        return {k: v for k, v in own.items() if v is not None}


@dataclass(frozen=True)
class FieldExperiment(Settings):
    """Notebook 07: the TMS settings decomposed once per seed (the untrained controls once per control_seeds, None:
    every seed),
    n_subnetworks = n_features × subnetworks_per_feature, on n_samples L3D samples per seed with features on
    with probability l3d_p_active (None: the toy's p_active, the data distribution); 40-10 with its own
    n_samples_40_10, epochs_40_10, top_k_40_10 and restarts_40_10 (L3D starts screened; each setting's values:
    `benchmark`); the residual MLP as
    `resid` says. perturbations, perturbation: the stability check (`l3d.experiments.stability`): every TMS
    setting's decompositions run `perturbations` more times with the toy's weights and the start perturbed by a
    relative `perturbation` (0 perturbations: no check)."""

    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2, 3, 4])
    seed: int = bounded(0, low=0)
    device: str = bounded("auto", choices=("auto", "cpu", "cuda"))
    out_dir: str = "figures"
    tms_settings: list[str] = dataclasses.field(default_factory=lambda: ["5-2", "5-2-id", "40-10", "40-10-id"])
    controls: list[str] = dataclasses.field(default_factory=lambda: ["5-2", "40-10"])
    control_seeds: list[int] | None = None
    perturbations: int = bounded(3, low=0)
    perturbation: float = bounded(1e-6, low=0, open_low=True)
    n_samples: int = bounded(1000, low=2)
    n_samples_40_10: int = bounded(5000, low=2)
    epochs_40_10: int = bounded(30, low=1)
    restarts_40_10: int = bounded(1, low=1)
    top_k_40_10: float = bounded(0.05, low=0, high=1, open_low=True)
    l3d_p_active: float | None = bounded(None, low=0, high=1, open_low=True)
    refit_min_share: float | None = bounded(0.8, low=0, high=1, open_low=True)
    subnetworks_per_feature: int = bounded(1, low=1)
    toy: TMSTraining = dataclasses.field(default_factory=TMSTraining, metadata={"prefix": "toy_"})
    l3d: L3DConfig = dataclasses.field(default_factory=L3DConfig)
    resid: ResidSettings = dataclasses.field(default_factory=ResidSettings, metadata={"prefix": "resid_"})
    run_resid: bool = True
    sparse: SparseSamples = dataclasses.field(default_factory=SparseSamples, metadata={"prefix": "sparse_"})

    def check(self) -> list[str]:
        problems = []
        if not self.seeds or self.seed not in self.seeds or any(s < 0 for s in self.seeds):
            problems.append(f"seed {self.seed} must be one of seeds {self.seeds}, all ints >= 0")
        if self.control_seeds is not None and (not self.control_seeds
                                               or not set(self.control_seeds) <= set(self.seeds)):
            problems.append(f"control_seeds {self.control_seeds} must be None (every seed) "
                            f"or some of seeds {self.seeds}")
        for name in ("tms_settings", "controls"):
            for setting in getattr(self, name):
                try:
                    parse_tms(setting)
                except ValueError as e:
                    problems.append(f"{name}: {e}")
        if self.refit_min_share is not None and self.refit_min_share >= 1:
            problems.append(f"refit_min_share must be < 1 (or None: no refit rows), got {self.refit_min_share}")
        for setting in self.sparse.settings:
            if setting not in ("40-10", "40-10-id"):
                problems.append(f"sparse_settings: {setting!r} must be '40-10' or '40-10-id'")
        sample_counts = {"n_samples": self.n_samples, "n_samples_40_10": self.n_samples_40_10,
                         "resid_n_samples": self.resid.n_samples,
                         **({"sparse_n_samples": self.sparse.n_samples} if self.sparse_settings() else {})}
        if self.l3d.batch_size > min(sample_counts.values()):
            problems.append(f"batch_size {self.l3d.batch_size} must not exceed any of "
                            + ", ".join(f"{k} {v}" for k, v in sample_counts.items()))
        return problems

    def sparse_settings(self) -> list[str]:
        """The settings of the sparser-samples variant that also run in the main part (it reuses their toys)."""
        return [s for s in self.sparse.settings if s in self.tms_settings]

    def benchmark(self, setting: str) -> BenchmarkSetting:
        """The TMS setting named `setting` ("5-2", "5-2-id", "40-10", "40-10-id") as one object: the one place
        where the notebook's 40-10 parameters (n_samples_40_10, epochs_40_10, top_k_40_10, restarts_40_10,
        toy_batch_size_40_10, toy_restarts_40_10) become the 40-10 settings' values; 5-2 takes the shared ones."""
        n_features, n_hidden, identity = parse_tms(setting)
        toy = self.toy
        own = {"5-2": {"zero_bias": False, "toy_batch_size": toy.batch_size, "toy_restarts": toy.restarts,
                       "n_samples": self.n_samples},
               "40-10": {"zero_bias": True, "toy_batch_size": toy.batch_size_40_10, "toy_restarts": toy.restarts_40_10,
                         "n_samples": self.n_samples_40_10, "epochs": self.epochs_40_10, "top_k": self.top_k_40_10,
                         "restarts": self.restarts_40_10}}[setting.removesuffix("-id")]
        return BenchmarkSetting(setting, n_features, n_hidden, identity, p_active=self.l3d_p_active or toy.p_active,
                                **own)

    def l3d_config(self, n_features: int, n_samples: int, seed: int, **changes) -> L3DConfig:
        """One decomposition's settings: n_features × subnetworks_per_feature subnetworks, every sample in one
        gradient pass per epoch, `changes` on top (a TMS setting's own: `BenchmarkSetting.l3d_changes`)."""
        batch = self.l3d.batch_size
        return self.l3d.replace(**{"n_subnetworks": n_features * self.subnetworks_per_feature, "seed": seed,
                                   "chunk_size": n_samples // batch * batch, **changes})
