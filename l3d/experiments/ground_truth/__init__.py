"""Scoring a decomposition against known ground truth: which subnetwork serves which circuit, how purely,
how selective interventions are and (for the circuit-superposition toy) the coefficients it implies.

A *circuit* is a set of input features that are on together (one feature, or a group). Every circuit is
probed with inputs where only it is active; the impact of each subnetwork on those inputs (`l3d.impacts.impact`)
says how much of the subnetwork's work falls on each circuit. Two diagnostics use the labels themselves to
say what one subnetwork per circuit would reach: `circuit_aligned_error` (one best direction per circuit)
and `fit_circuit_aligned` (a decomposition trained to serve each circuit with its own subnetwork;
`aligned_then_paper` also trains it on with the paper's loss; `aligned_then_paper_fresh` for fresh ones, one stack).

Modules: recovery (matching circuits to subnetworks, impact share, MMCS), labelled (the diagnostics trained or fitted
with the labels), selectivity (interventions), paths (the coefficients a decomposition implies), correlation
(r, r² and the low-rank bound).
"""
from .correlation import low_rank_r2, paper_r, r_squared, squared_correlation
from .labelled import aligned_then_paper, aligned_then_paper_fresh, circuit_aligned_error, fit_circuit_aligned
from .paths import decoder_paths, own_paths, paper_coefficients, path_coefficients
from .recovery import (
    Recovery,
    circuit_impact,
    circuit_inputs,
    evaluate_and_recover,
    input_purity,
    match,
    mmcs,
    ordered_subnetworks,
    recover,
    recovery_from_impact,
)
from .selectivity import intervention_selectivity, own_outputs

__all__ = [
    "low_rank_r2", "paper_r", "r_squared", "squared_correlation", "aligned_then_paper", "aligned_then_paper_fresh",
    "circuit_aligned_error",
    "fit_circuit_aligned", "decoder_paths", "own_paths", "paper_coefficients", "path_coefficients", "Recovery",
    "circuit_impact", "circuit_inputs", "evaluate_and_recover", "input_purity", "match", "mmcs",
    "ordered_subnetworks", "recover", "recovery_from_impact", "intervention_selectivity", "own_outputs",
]
