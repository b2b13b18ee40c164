import matplotlib

matplotlib.use("Agg")

from l3d.report.model_plots import selectivity_histogram  # noqa: E402


def test_the_threshold_is_applied_to_each_pair_not_drawn_on_the_ratio_axis():
    ratio, random_ratio = [0.1, 1.0, 10.0, 0.5], [0.01, 1.0, 1.0, 0.5]   # gains 10, 1, 10, 1
    fig = selectivity_histogram(ratio, random_ratio, threshold=3.0)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "selective (ρ ≥ 3 × its twin's): 50%" in labels
    assert all(line.get_xdata()[0] != 3.0 for line in ax.get_lines() if len(line.get_xdata()))


def test_the_medians_are_the_lower_ones_as_in_metrics_json():
    """An even count has two middle values: the figure marks the lower one, as causal.summarize's medians do."""
    fig = selectivity_histogram([0.1, 1.0, 10.0, 0.5], [0.01, 0.2, 1.0, 2.0], threshold=3.0)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "L3D subnetworks: median 0.5" in labels                          # not 0.75, the mean of 0.5 and 1
    assert "random directions (same ranks, norm): median 0.2" in labels     # not 0.6
    assert sorted(line.get_xdata()[0] for line in ax.get_lines() if len(line.get_xdata())) == [0.2, 0.5]
