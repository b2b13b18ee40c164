"""The shared figures draw any shapes and are written as PNG and PDF; metrics are written as plain JSON."""
import json
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import l3d  # noqa: E402
from l3d.report import plots  # noqa: E402
from l3d.report.results import save_figure, write_metrics  # noqa: E402


def test_subnetwork_heatmaps_for_any_tensor_shapes(tmp_path):
    dec = l3d.Decomposition({"conv": (4, 3, 2, 2), "w": (3, 5), "b": (3,)}, 6, rank=1)
    fig = plots.subnetwork_heatmaps(dec.decoder_directions(), subnetworks=[4, 1], row_labels=["a", "b"])
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 2 * 3
    assert images[0].images[0].get_array().shape == (4, 12)   # trailing modes flattened
    assert images[2].images[0].get_array().shape == (3, 1)    # vectors as a column
    png = save_figure(fig, tmp_path, "heatmaps")
    assert png.exists() and png.with_suffix(".pdf").exists()
    plt.close(fig)


def test_a_figure_saved_twice_gives_the_same_bytes(tmp_path, monkeypatch):
    fig = plots.effect_matrix(torch.arange(6.0).reshape(2, 3))
    saved = []
    for day, epoch in enumerate(["1700000000", "1800000000"]):    # two runs, on different days
        monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
        png = save_figure(fig, tmp_path / str(day), "effect")
        saved.append((png.read_bytes(), png.with_suffix(".pdf").read_bytes()))
    plt.close(fig)
    assert saved[0] == saved[1]


def test_intervention_plots():
    effect = torch.rand(7, 11, 5)
    fig = plots.intervention_sweeps(torch.linspace(-1, 1, 11), effect, own=[0, 1, None, [2, 3], 4, 0, 1], ncols=3)
    panels = [ax for ax in fig.axes if ax.lines]
    assert len(panels) == 7 and all(len(ax.lines) == 5 for ax in panels)
    plt.close(fig)
    fig = plots.effect_matrix(effect.mean(1))
    assert fig.axes[0].images[0].get_array().shape == (7, 5)
    plt.close(fig)


def test_direction_cosines_with_and_without_planar_panel():
    cos = torch.rand(5, 6)
    pairs = [(0, 2), (1, 0), (2, 5), (3, 1), (4, 3)]
    fig = plots.direction_cosines(cos, pairs, features=torch.randn(5, 2), directions=torch.randn(5, 2))
    assert len([ax for ax in fig.axes if ax.images]) == 1 and len(fig.axes) == 3   # matrix, colorbar, arrows
    plt.close(fig)
    fig = plots.direction_cosines(cos, pairs)
    assert len(fig.axes) == 2
    plt.close(fig)


def test_training_history_plot():
    history = l3d.History(reconstruction_error=[0.9, 0.5, 0.3], lr=[0.1] * 3, p_act=[[0.1, 0.0]] * 3)
    fig = plots.training_history(history, title="t")
    assert len(fig.axes[1].lines) == 2
    plt.close(fig)
    history.dropped_energy = [0.0, 0.2, 0.1]                   # fit(silence > 0); the warm start drops nothing
    fig = plots.training_history(history)
    assert [list(line.get_ydata()) for line in fig.axes[0].lines][0] == [0.9, 0.5, 0.3]
    assert math.isnan(fig.axes[0].lines[1].get_ydata()[0]) and list(fig.axes[0].lines[1].get_ydata()[1:]) == [0.2, 0.1]
    plt.close(fig)


def test_write_metrics_is_plain_json(tmp_path):
    path = write_metrics(tmp_path, {"a": torch.tensor([1.0, 2.0]), "b": float("nan"), "c": {1: (math.inf, 3)}})
    written = json.loads(path.read_text())
    assert written.pop("environment")["torch"]                  # every metrics.json records it (test_results.py)
    assert written == {"a": [1.0, 2.0], "b": None, "c": {"1": [None, 3]}}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_coefficients_scatter_shows_both_matrices_and_every_pair():
    true, derived = torch.rand(4, 3) * 3, torch.rand(4, 3) * 3
    fig = plots.coefficients_scatter(true, derived, title="r²")
    heatmaps = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    assert [h.shape for h in heatmaps] == [(4, 3), (4, 3)]
    torch.testing.assert_close(torch.tensor(heatmaps[1].data), derived)
    points = fig.axes[2].collections[0].get_offsets()
    assert points.shape == (12, 2)
    torch.testing.assert_close(torch.tensor(points.data, dtype=torch.float32), torch.stack([true.flatten(), derived.flatten()], 1))
    plt.close(fig)


def test_error_against_draws_every_seed_and_the_median():
    errors = {0: [0.3, 0.2, 0.1], 1: [0.5, 0.1, 0.2], 2: [0.4, 0.3, 0.15]}
    fig = plots.error_against([1, 2, 3], errors, "rank", paper=[0.3, 0.3, 0.3])
    ax = fig.axes[0]
    assert len(ax.collections) == 3                                        # one dot per seed and value
    median, paper = ax.lines
    assert list(median.get_ydata()) == pytest.approx([0.4, 0.2, 0.15])
    assert list(paper.get_ydata()) == [0.3, 0.3, 0.3]
    plt.close(fig)


def test_matched_subnetworks_orders_rows_by_circuit():
    from l3d.experiments.ground_truth import recovery_from_impact

    dec = l3d.Decomposition({"w": (3, 4), "b": (3,)}, 3, rank=1)
    found = recovery_from_impact(torch.tensor([[0.0, 0.0, 2.0], [1.0, 0.0, 0.0]]), [0.2, 0.0, 0.3])
    fig = plots.matched_subnetworks(dec.decoder_directions(), found, "x{}", title="matched")
    rows = [t.get_text() for ax in fig.axes if ax.images for t in ax.texts]
    assert rows == ["subnetwork 2 (x0)", "subnetwork 0 (x1)", "subnetwork 1 (dead)"]
    assert fig._suptitle.get_text() == "matched"
    plt.close(fig)


def test_label_diagnostic_draws_three_stages_per_seed_and_an_arrow():
    rows = [{"seed": s, "reconstruction_error": 0.2 + s, "min_purity": 0.5, "aligned_reconstruction_error": 0.3,
             "aligned_min_purity": 0.9, "aligned_then_paper_reconstruction_error": 0.1, "aligned_then_paper_min_purity": 0.4}
            for s in (0, 1)]
    fig = plots.label_diagnostic(rows)
    ax = fig.axes[0]
    points = [tuple(c.get_offsets()[0]) for c in ax.collections]
    assert points == [(0.2, 0.5), (0.3, 0.9), (0.1, 0.4), (1.2, 0.5), (0.3, 0.9), (0.1, 0.4)]
    assert len(ax.texts) == 2 and [t.get_text() for t in ax.get_legend().get_texts()] == ["seed 0", "seed 1"]
    plt.close(fig)


def test_p_act_bars_marks_exactly_the_dead_subnetworks():
    fig = plots.p_act_bars([0.2, 0.0, 0.05, 0.0], title="P_act")
    ax = fig.axes[0]
    assert [bar.get_height() for bar in ax.patches] == pytest.approx([0.2, 0.0, 0.05, 0.0])
    crosses = ax.collections[0].get_offsets()
    assert crosses[:, 0].tolist() == [1, 3]
    plt.close(fig)


def test_training_history_with_warm_start_and_last_epoch_p_act():
    history = l3d.History(reconstruction_error=[0.9, 0.5, 0.3], lr=[0.1] * 3, p_act=[[0.1, 0.0, 0.3, 0.0]] * 3)
    fig = plots.training_history(history, warm_start_epochs=2, p_act="last")
    left, right = fig.axes
    assert list(left.lines[0].get_ydata()) == [0.9, 0.5, 0.3]
    assert left.patches[0].get_x() == 0.5 and left.patches[0].get_width() == 2   # the shaded warm start
    assert sum(bar.get_height() for bar in right.patches) == 4 and right.get_title() == "P_act in the last epoch; dead: 50%"
    plt.close(fig)
    with pytest.raises(ValueError, match="p_act must be 'epochs' or 'last'"):
        plots.training_history(history, p_act="hist")


def test_pattern_purity_bars_colour_the_owned_patterns():
    fig = plots.pattern_purity_bars({"a": 0.9, "b": 0.2, "c": 0.8}, threshold=0.8)
    ax = fig.axes[0]
    assert [bar.get_height() for bar in ax.patches] == pytest.approx([0.9, 0.2, 0.8])
    green = matplotlib.colors.to_rgba("C2")
    assert [bar.get_facecolor() == green for bar in ax.patches] == [True, False, True]
    assert ax.get_title() == "Best subnetwork purity per pattern: 2 of 3 patterns owned"
    plt.close(fig)


def test_purity_histogram_counts_every_subnetwork():
    fig = plots.purity_histogram(torch.tensor([0.05, 0.5, 0.55, 1.0]), title="t")
    heights = [bar.get_height() for bar in fig.axes[0].patches]
    assert len(heights) == 10 and heights[0] == 1 and heights[5] == 2 and heights[9] == 1
    plt.close(fig)


def test_top_images_one_row_per_subnetwork_with_classes_and_titles():
    images = torch.rand(6, 1, 8, 8)
    top = torch.tensor([[0, 1, 2], [3, 4, 5], [5, 0, 1]])
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    fig = plots.top_images(images, top, [2, 0], labels, ["zero", "one", "two"], titles=["moves 2", "moves 0"])
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 6
    assert [ax.get_xlabel() for ax in axes[:3]] == ["two", "zero", "one"]
    assert axes[0].get_ylabel() == "subnetwork 2" and axes[3].get_ylabel() == "subnetwork 0"
    assert axes[1].get_title() == "top affected logits: moves 2"
    torch.testing.assert_close(torch.as_tensor(axes[0].images[0].get_array()), images[5, 0])
    colour = plots.top_images(torch.rand(2, 3, 4, 4), torch.tensor([[1, 0]]), [0], torch.tensor([0, 0]), ["x"])
    assert colour.axes[0].images[0].get_array().shape == (4, 4, 3)
    plt.close(fig)
    plt.close(colour)
