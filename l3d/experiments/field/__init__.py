"""The field's shared toy benchmarks (notebook 07): the toys that APD and SPD are scored on, built and trained as
goodfire-ai/spd defines them, decomposed by L3D and scored with the field's metrics, MMCS and ML2R.

Toys (goodfire-ai/spd at commit 3f0bb61e, our own code):

* TMS n-m (`toys.TMS` with layout "linear"; spd/experiments/tms/models.py:23-64):
  `x̂ = ReLU(linear2(hidden(linear1(x))))`, linear1 (m × n, no bias), linear2 (n × m, bias) tied to linear1ᵀ while
  training, and for the `-id` settings one hidden layer (m × m, no bias) fixed to the identity
  (train_tms.py:134-144). Trained (`train_benchmark_tms`) on fresh batches
  where every feature is on with probability 0.05, uniform on [0, 1] (`at_least_zero_active`,
  spd/utils/data_utils.py:242-252), loss mean((x − x̂)²), AdamW lr 5e-3 constant, weight decay 0.01 (torch's
  default), 10,000 steps, batch 1024 (5-2) or 8192 (40-10); 40-10 starts with a zero bias
  (train_tms.py:26-66, 339-422). A fixed identity changes nothing in training, so a seed's `-id` toy has the
  weights of its plain toy, with the identity inserted (`TMS.with_identity`).
* Residual MLP (`ResidMLP`; spd/experiments/resid_mlp/models.py:40-106, train_resid_mlp.py:215-245):
  `y = W_U (r + mlp_out(ReLU(mlp_in(r))))`, `r = W_E x`, 100 features, a fixed random embedding W_E
  (1000-dim rows of unit norm) with W_U = W_Eᵀ, 50 ReLU neurons without biases, trained to
  `ReLU(x) + x` with features on with probability 0.01, uniform on [−1, 1] (resid_mlp_dataset.py:50-100),
  batch 2048, 1000 steps, AdamW lr 3e-3 cosine to 0, weight decay 0.01.

Metrics (`column_scores`; spd/experiments/tms/plotting.py:81-104 and 941-959, the papers' definitions in
papers/*_paper.md): for every feature j, the model's weight column W[:, j] of linear1 (the neurons' input from
feature j for the residual MLP: mlp_in W_E[j]) against the same slice of every component;
MMCS = mean over j of the max over components of the cosine; ML2R = mean over j of the norm of that best
component's slice over the norm of W[:, j]. L3D's decoder directions have unit norm and no sign, so the
cosine is |cos|, and a subnetwork's weights are its direction times the least-squares coefficient of the
model's weights in the basis of the subnetworks' directions (`least_squares_components`).

Decompositions: every seed of a setting, and with the stability check its perturbed reruns
(`l3d.experiments.stability`: the toy's weights and the start perturbed by a relative 1e-6), train as one
`l3d.sweep`; a decomposition's outcome is how many features it recovers, whether all, and how many subnetworks are
dead.

Modules: models (the residual MLP, the data), training (the toys trained as SPD does), metrics (MMCS, ML2R,
matching), settings (notebook 07's settings; each TMS setting's own values as one `BenchmarkSetting`), runner
(decompose, score, summarize), tables (the notebook's tables).
"""
from .metrics import (
    RECOVERED,
    chance_mmcs,
    column_scores,
    least_squares_components,
    median_min_success,
    resid_scores,
    slice_shares,
    tms_scores,
)
from .models import ResidMLP, benchmark_features
from .runner import (
    MEDIAN_KEYS,
    OUTCOME_KEYS,
    check_stability,
    decompose_controls,
    decompose_resid,
    decompose_sparse,
    decompose_tms,
    l3d_samples,
    refit_decomposition,
    score_row,
    stability_metrics,
    summarize,
    train_all_tms,
    without_gradients,
)
from .settings import (
    TMS_SIZES,
    BenchmarkSetting,
    FieldExperiment,
    ResidSettings,
    SparseSamples,
    TMSTraining,
    parse_tms,
)
from .tables import PUBLISHED, headline_table, refit_table, seed_table, stability_table
from .training import random_tms, resid_labels, train_benchmark_tms, train_resid_mlp

__all__ = [
    "MEDIAN_KEYS", "OUTCOME_KEYS", "PUBLISHED", "RECOVERED", "TMS_SIZES", "BenchmarkSetting", "benchmark_features",
    "chance_mmcs", "check_stability", "column_scores", "decompose_controls", "decompose_resid", "decompose_sparse",
    "decompose_tms", "FieldExperiment", "headline_table", "l3d_samples", "least_squares_components",
    "median_min_success", "parse_tms", "random_tms", "refit_decomposition", "refit_table", "resid_labels",
    "resid_scores", "ResidMLP", "ResidSettings", "score_row", "seed_table", "slice_shares", "SparseSamples",
    "stability_metrics", "stability_table", "summarize", "tms_scores", "TMSTraining", "train_all_tms",
    "train_benchmark_tms", "train_resid_mlp", "without_gradients",
]
