"""The paper's experiments: models, data and ground-truth scoring (needs the `experiments` extra).

toys.py          the toy models (TMS, circuit superposition, high-rank circuits, x²), their data and training
tms.py           notebook 01: the toy model of superposition, its settings and its scores per seed
tmcs.py          notebook 02: circuit superposition, its settings and its scores per seed (r², ceilings)
ground_truth/    scoring against known circuits: matching, purity, MMCS, r, label-aligned diagnostics
field/           notebook 07: the field's toy benchmarks (SPD's TMS and residual MLP), MMCS and ML2R
corpus.py        the synthetic story corpus with known token-level patterns
transformer.py   the embedded story transformer (GPT-Neo) and TinyStories-8M; notebook 05's settings and readings
cnn.py           the embedded digits CNN and MobileNet-v3-small; notebook 06's settings and readings
model_experiment.py  what 05 and 06 share: settings with a source, the fit's metrics, held-out top samples
subnetworks.py   reading subnetworks: how cleanly their top samples share a label, which outputs they move
"""
