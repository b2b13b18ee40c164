"""The paper's experiments: models, data and ground-truth scoring (needs the `experiments` extra).

toys.py          the toy models (TMS, circuit superposition, high-rank circuits, x²), their data and training
tms.py           notebook 01: the toy model of superposition, its settings and its scores per seed
tmcs.py          notebook 02: circuit superposition, its settings and its scores per seed (r², ceilings)
ground_truth.py  scoring against known circuits: matching, purity, MMCS, r, label-aligned diagnostics
corpus.py        the synthetic story corpus with known token-level patterns
transformer.py   the embedded story transformer (GPT-Neo) and TinyStories-8M
cnn.py           the embedded digits CNN and MobileNet-v3-small
subnetworks.py   reading subnetworks: how cleanly their top samples share a label, which outputs they move
"""
