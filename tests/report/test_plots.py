"""The shared figures draw any shapes and are written as PNG and PDF; metrics are written as plain JSON."""
import json
import math
import re

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


def panel_inches(fig, ax) -> tuple[float, float]:
    box = ax.get_position()
    width, height = fig.get_size_inches()
    return box.width * width, box.height * height


def test_subnetwork_heatmaps_tick_every_index_keep_square_cells_and_fit_a_page():
    dec = l3d.Decomposition({"layers.0.weight": (10, 30), "layers.1.weight": (30, 10), "layers.1.bias": (30,)}, 10,
                            rank=2, seed=0)   # notebook 03's shapes: 10 subnetworks, 30 tall
    fig = plots.subnetwork_heatmaps(dec.decoder_directions(), cell_size=0.12)
    width, height = fig.get_size_inches()
    assert width <= plots.MAX_FIGURE[0] + 1e-6 and height <= plots.MAX_FIGURE[1] + 1e-6   # before: 6420 px tall
    panels = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    assert len(panels) == 30
    cells = {round(w / ax.images[0].get_array().shape[1], 6) for ax in panels for w, _ in [panel_inches(fig, ax)]}
    cells |= {round(h / ax.images[0].get_array().shape[0], 6) for ax in panels for _, h in [panel_inches(fig, ax)]}
    assert len(cells) == 1                                         # one square cell size throughout
    cell = cells.pop()
    assert cell > 0.07              # blocks side by side: one column of ten 30-cell rows within 18 in allows 0.053 in
    def spaced(ticks, n):   # every step-th index from 0, labels at least TICK_SPACING apart, maybe the last index
        ticks = [int(t) for t in ticks]
        step = ticks[1] - ticks[0]
        regular = list(range(0, n, step))
        return (step in (1, 2, 5) and step * cell >= plots.TICK_SPACING and ticks[:len(regular)] == regular
                and ticks[len(regular):] in ([], [n - 1]))

    assert spaced(panels[0].get_xticks(), 30) and spaced(panels[0].get_yticks(), 10)
    assert list(panels[2].get_xticks()) == [] and spaced(panels[2].get_yticks(), 30)   # a vector: one column
    labels = [t for ax in panels for t in ax.texts]
    assert [t.get_text() for t in labels] == [f"subnetwork {k}" for k in range(10)]
    columns = sorted({round(t.xy[0], 3) for t in labels})
    assert len(columns) == 2                                       # two columns of five
    plt.close(fig)
    small = plots.subnetwork_heatmaps({"W_in": torch.rand(5, 2, 5), "W_out": torch.rand(5, 5, 2),
                                       "b": torch.rand(5, 5)})
    assert len({round(t.xy[0], 3) for ax in small.axes for t in ax.texts}) == 1   # TMS's five: one column
    assert all(small.get_size_inches() < (7.0, 12.0))                             # before: 8.4 x 12.5 in
    plt.close(small)


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


def lines_by_label(ax) -> dict:
    return {line.get_label(): [float(v) for v in line.get_ydata()] for line in ax.lines}


def test_training_history_plot():
    history = l3d.History(reconstruction_error=[0.9, 0.5, 0.3], lr=[0.1] * 3, p_act=[[0.1, 0.0]] * 3)
    fig = plots.training_history(history, title="t")
    left, right = fig.axes[:2]
    assert lines_by_label(left) == {"reconstruction error": [0.9, 0.5, 0.3]}   # 3 epochs: nothing to average
    heatmap = right.images[0].get_array()
    # (C, epochs)
    assert heatmap.shape == (2, 3) and heatmap.flatten().tolist() == pytest.approx([0.1] * 3 + [0.0] * 3)
    assert [t.get_text() for t in right.get_yticklabels()] == ["0", "1 (dead)"]
    assert right.get_title() == "P_act per subnetwork and epoch; dead in the last epoch: 1 of 2"
    plt.close(fig)
    history.dropped_energy = [0.0, 0.2, 0.1]                   # fit(silence > 0); the warm start drops nothing
    fig = plots.training_history(history)
    dropped = lines_by_label(fig.axes[0])["dropped coefficients, S / Σ‖g‖²"]
    assert math.isnan(dropped[0]) and dropped[1:] == pytest.approx([0.2, 0.1])
    plt.close(fig)


def test_moving_mean_averages_each_value_with_its_neighbours():
    assert plots.moving_mean([1, 2, 3, 4, 5], 3) == pytest.approx([1.5, 2, 3, 4, 4.5])
    assert plots.moving_mean([1, 2, 3, 4], 2) == pytest.approx([1, 1.5, 2.5, 3.5])   # the value and the one before
    assert plots.moving_mean([1, float("nan"), 3], 3) == pytest.approx([1, 2, 3])    # NaN skipped
    assert plots.moving_mean([], 5) == []


def test_dead_per_epoch_draws_each_runs_dead_share_from_its_history_or_its_dict():
    a = l3d.History([0.5] * 3, [0.1] * 3, [[0.1, 0.2, 0.3, 0.4], [0.0, 0.2, 0.0, 0.4], [0.0, 0.0, 0.0, 0.4]])
    b = l3d.History([0.5] * 3, [0.1] * 3, [[0.1, 0.2, 0.3, 0.4], [0.0, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4]])
    fig = plots.dead_per_epoch({"a": a, "b": b.to_dict()}, title="t")
    assert lines_by_label(fig.axes[0]) == {"a: 75.0 % at the end": [0.0, 50.0, 75.0],
                                           "b: 0.0 % at the end": [0.0, 25.0, 0.0]}
    assert fig.axes[0].get_title() == "t"
    plt.close(fig)


def test_training_history_shows_the_trend_beside_the_noise_and_plain_log_ticks():
    torch.manual_seed(0)
    n = 200
    trend = [0.8 * 0.97 ** e + 0.02 for e in range(n)]          # from 0.8 to 0.022: more than a factor of 10
    noisy = [t * (1 + 0.3 * float(torch.rand(()) - 0.5)) for t in trend]
    fig = plots.training_history(l3d.History(noisy, [0.01] * n, [[0.1, 0.1]] * n))
    left = fig.axes[0]
    lines = lines_by_label(left)
    assert lines["reconstruction error"] == pytest.approx(noisy)
    smooth = lines["its mean over 10 epochs"]                    # a twentieth of 200 epochs
    assert smooth == pytest.approx(plots.moving_mean(noisy, 10))
    assert smooth[100] == pytest.approx(sum(noisy[95:105]) / 10)
    assert left.get_yscale() == "log"
    fig.canvas.draw()
    labels = [t.get_text() for t in left.get_yticklabels() if t.get_text()]
    assert labels and all(re.fullmatch(r"0\.\d+|\d+", text) for text in labels), labels   # 0.05, 0.1: no 10^k
    plt.close(fig)
    flat = [0.05 + 0.01 * (e % 3) for e in range(n)]           # 0.05 to 0.07: a linear axis from 0
    fig = plots.training_history(l3d.History(flat, [0.01] * n, [[0.1]] * n))
    assert fig.axes[0].get_yscale() == "linear" and fig.axes[0].get_ylim()[0] == 0
    plt.close(fig)


def test_training_history_averages_the_warm_start_apart_and_scales_p_act_without_it():
    error = [0.9, 0.8, 0.1, 0.1, 0.1, 0.1] * 10                 # 60 epochs: the mean spans 3
    p_act = [[1.0, 1.0]] * 2 + [[0.2, 0.05]] * 58
    fig = plots.training_history(l3d.History(error, [0.01] * 60, p_act), warm_start_epochs=2)
    left, right = fig.axes[:2]
    smooth = lines_by_label(left)["its mean over 3 epochs"]
    assert smooth[:2] == pytest.approx([0.85, 0.85])             # the warm start's own mean
    assert smooth[2] == pytest.approx(0.1)                       # not pulled up by the warm start's 0.8
    assert right.images[0].get_clim() == pytest.approx((0, 0.2))  # the colours for the trained epochs
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
    torch.testing.assert_close(torch.tensor(points.data, dtype=torch.float32),
                               torch.stack([true.flatten(), derived.flatten()], 1))
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
    rows = [{"seed": s, "reconstruction_error": 0.2 + s, "min_impact_share": 0.5, "aligned_reconstruction_error": 0.3,
             "aligned_min_impact_share": 0.9, "aligned_then_paper_reconstruction_error": 0.1,
             "aligned_then_paper_min_impact_share": 0.4}
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
    assert lines_by_label(left)["reconstruction error"] == [0.9, 0.5, 0.3]
    assert left.patches[0].get_x() == 0.5 and left.patches[0].get_width() == 2   # the shaded warm start
    assert (sum(bar.get_height() for bar in right.patches) == 4
            and right.get_title() == "P_act in the last epoch; dead: 50%")
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
