"""Figures, tables and metrics of the notebooks (needs matplotlib, the `notebooks` extra).

plots.py    the figures
tables.py   CSV and markdown tables
results.py  saving figures and writing metrics.json
"""
