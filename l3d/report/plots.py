"""The notebooks' figures, by what they draw. Each function takes plain numbers or tensors and returns a matplotlib
Figure (save it with `l3d.report.results.save_figure`). Every notebook takes its figures from here
(`plots.<name>`); each is drawn in the module of what it shows:

weight_plots.py    subnetworks' directions in parameter space as heatmaps (paper Fig. 3, 5, 7, 8)
training_plots.py  a training's curves and P_act; reconstruction error against a setting over seeds
toy_plots.py       the toy notebooks (01-04): interventions, directions and coefficients against the truth
model_plots.py     the model notebooks (05, 06, 08): causal selectivity, label purity, top images, layer shares
field_plots.py     notebook 07: each seed's scores beside APD's and SPD's published ones
"""
from .field_plots import column_shares, seed_scores
from .model_plots import layer_shares, pattern_purity_bars, purity_histogram, selectivity_histogram, top_images
from .toy_plots import coefficients_scatter, direction_cosines, effect_matrix, intervention_sweeps, label_diagnostic
from .training_plots import dead_per_epoch, error_against, moving_mean, p_act_bars, training_history
from .weight_plots import MAX_FIGURE, TICK_SPACING, matched_subnetworks, subnetwork_heatmaps

__all__ = ["MAX_FIGURE", "TICK_SPACING", "coefficients_scatter", "column_shares", "dead_per_epoch",
           "direction_cosines", "effect_matrix", "error_against", "intervention_sweeps", "label_diagnostic",
           "layer_shares", "matched_subnetworks", "moving_mean", "p_act_bars", "pattern_purity_bars",
           "purity_histogram", "seed_scores", "selectivity_histogram", "subnetwork_heatmaps", "top_images",
           "training_history"]
