"""Figures, tables and metrics of the notebooks (needs matplotlib, the `notebooks` extra).

plots.py           every figure under one name (`plots.<figure>`), each drawn in the module of what it shows:
weight_plots.py    subnetworks' weights as heatmaps, matched against the toys' circuits
training_plots.py  training curves, P_act, error against a setting
toy_plots.py       the toys' intervention sweeps, effects, cosines and label diagnostics
model_plots.py     05, 06 and 08: label purity, top images, causal selectivity
field_plots.py     07: the field benchmarks against the published numbers
tables.py          CSV and markdown tables
results.py         saving figures and writing metrics.json
headlines.py       each notebook's headline numbers, compared between runs (`make test`, `make compare`)
tolerances.py      how far each headline number may move, and why
dashboard/         a browsable HTML dashboard of a fitted decomposition
"""
