"""Figures a reviewer accepts: a title, labelled axes and a key (colour bar or legend); no point drawn outside the
axes."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import l3d  # noqa: E402
from l3d.report import plots  # noqa: E402


def test_subnetwork_heatmaps_have_a_title_axis_labels_and_labelled_colour_bars():
    dec = l3d.Decomposition({"W_in": (2, 5), "W_out": (5, 2), "b": (5,)}, 3, rank=1, seed=0)
    fig = plots.subnetwork_heatmaps(dec.decoder_directions(), title="TMS subnetworks (paper Fig. 3)",
                                    axis_labels={"W_in": ("hidden", "feature")})
    assert fig._suptitle.get_text() == "TMS subnetworks (paper Fig. 3)"
    panels = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    assert len(panels) == 9
    assert [ax.get_ylabel() for ax in panels[:3]] == ["hidden", "dim 0 (5)", "dim 0 (5)"]
    assert [ax.get_xlabel() for ax in panels[-3:]] == ["feature", "dim 1 (2)", ""]   # the bottom row names the columns
    bars = [ax for ax in fig.axes if ax not in panels]
    assert len(bars) == 3 and all(ax.get_ylabel() == "weight" for ax in bars)
    plt.close(fig)
    fig = plots.subnetwork_heatmaps({"conv": torch.rand(1, 4, 3, 2, 2)})
    assert fig._suptitle.get_text() == "Subnetwork directions in parameter space"
    assert fig.axes[0].get_xlabel() == "dims 1–3 (3 × 2 × 2)"
    plt.close(fig)


def test_narrow_columns_are_wide_enough_for_their_names():
    dec = l3d.Decomposition({"layers.0.weight": (10, 25), "layers.0.bias": (10,), "layers.1.weight": (25, 10),
                             "layers.1.bias": (25,)}, 2, rank=1, seed=0)
    fig = plots.subnetwork_heatmaps(dec.decoder_directions(), cell_size=0.12)
    fig.canvas.draw()
    titles = [ax.title.get_window_extent() for ax in fig.axes[:4]]
    assert all(a.x1 < b.x0 for a, b in zip(titles, titles[1:]))   # column names do not run together
    plt.close(fig)


def test_error_against_keeps_every_dot_inside_and_keys_the_seeds():
    errors = [[0.199, 0.198], [0.181, 0.183], [0.2045, 0.204]]
    fig = plots.error_against([1, 2], errors, "Tucker rank")
    ax = fig.axes[0]
    assert ax.get_title() == "Reconstruction error against Tucker rank"
    assert ax.get_ylim()[0] == 0 and ax.get_ylim()[1] >= 1.1 * 0.2045
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["one seed", "median over seeds"]
    plt.close(fig)


def test_top_images_titles_and_explains_its_text():
    images = torch.rand(20, 1, 8, 8)
    top = torch.arange(12).view(4, 3)
    labels = torch.arange(20) % 3
    fig = plots.top_images(images, top, [2, 0], labels, [f"class {i}" for i in range(3)],
                           titles=["7 (+1.2)", "1 (+0.3)"], title="Top images (paper CNN figure)")
    assert fig._suptitle.get_text().startswith("Top images (paper CNN figure)\nrows: subnetworks")
    assert fig.axes[0].get_ylabel() == "subnetwork 2" and fig.axes[0].get_xlabel() == "class 0"   # image 6: 6 % 3
    assert fig.axes[1].get_title() == "top affected logits: 7 (+1.2)"
    assert len(fig.axes) == 6 and fig.axes[0].images[0].get_array().shape == (8, 8)
    plt.close(fig)
