"""The paper's experiments: models, data and ground-truth scoring (needs the `experiments` extra).

toys.py          the toys' data, the TMS's feature matching and the authors' conventions; the two below re-exported
toy_models.py    the toy models: the TMS (notebook 01's and 07's layouts), circuit superposition, high-rank, x²
toy_training.py  their training: many models of one architecture at once, the best of several initializations
tms.py           notebook 01: the toy model of superposition, its settings and its scores per seed
tmcs.py          notebook 02: circuit superposition, its settings and its scores per seed (r², ceilings)
high_rank.py     notebook 03: higher-rank circuits (groups of features on together)
square.py        notebook 04: a deep network computing x², the complex loss landscape
toy_experiment.py  what 01-04 share: settings, toys trained per seed, the L3D samples, the variants
stability.py     the stability check: does an outcome survive a perturbation of the floating point?
published.py     the published numbers L3D is compared with, each with its setting
ground_truth/    scoring against known circuits: matching, impact share, MMCS, r, label-aligned diagnostics
field/           notebook 07: the field's toy benchmarks (SPD's TMS and residual MLP), MMCS and ML2R
corpus.py        the synthetic story corpus with known token-level patterns
transformer.py   the embedded story transformer (GPT-Neo) and TinyStories-8M; notebook 05's settings and readings
cnn.py           the embedded digits CNN and MobileNet-v3-small; notebook 06's settings and readings
model_experiment.py  what 05 and 06 share: settings with a source, the fit's metrics, held-out top samples
subnetworks.py   reading subnetworks: how cleanly their top samples share a label (label purity), which outputs
                 they move
causal.py        causal selectivity: moving the weights along a decoder direction, on its top samples and others
whole_model.py   notebook 08: every weight tensor of the GPT-Neo at once, against one block and one per layer
weights/         the shipped models of 05 and 06 (safetensors, SHA-256 in manifest.json)
"""
