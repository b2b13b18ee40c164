"""Figures of the model notebooks: causal selectivity against random directions (05, 06, 08), where a whole-model
decomposition's subnetworks live (08), the label purity of the subnetworks' top samples (05, 06) and the top images
themselves (06). Every function takes plain numbers or tensors and returns a matplotlib Figure (save it with
`l3d.report.results.save_figure`)."""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from ..runtime.medians import lower_median


def selectivity_histogram(ratio: Sequence[float], random_ratio: Sequence[float], threshold: float,
                          title: str = "") -> plt.Figure:
    """Histograms of the causal selectivity ρ (`l3d.experiments.causal`) of the decomposition's subnetworks and of
    random directions of the same form (paired: ratio[k] and random_ratio[k] are subnetwork k and its random twin),
    on a log scale, with both medians marked: the lower median for an even count (`lower_median`), as metrics.json's
    median_ratio and random_median_ratio (`l3d.experiments.causal.summarize`). The threshold applies to each pair,
    ρ_k / its twin's (not to ρ itself), so it is not a line on this axis: the legend gives the share of pairs at or
    above it. ratio, random_ratio: (C,) each."""
    ours, rand = np.asarray(ratio, dtype=float), np.asarray(random_ratio, dtype=float)
    both = np.concatenate([ours, rand])
    both = both[both > 0]
    bins = np.logspace(np.log10(both.min()) - 0.05, np.log10(both.max()) + 0.05, 40)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for values, colour, label in ((rand, "0.6", "random directions (same ranks, norm)"),
                                  (ours, "C0", "L3D subnetworks")):
        median = lower_median(torch.as_tensor(values)).item()
        ax.hist(values, bins=bins, color=colour, alpha=0.75, label=f"{label}: median {median:.3g}")
        ax.axvline(median, color=colour, lw=1.5)
    selective = float(np.mean(ours >= threshold * rand)) if len(ours) else 0.0
    ax.plot([], [], " ", label=f"selective (ρ ≥ {threshold:g} × its twin's): {selective:.0%}")
    ax.set_xscale("log")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))   # counts of subnetworks
    ax.set_ylim(0, ax.get_ylim()[1] * 1.4)                  # room for the legend above the bars
    ax.set(xlabel="ρ = divergence on top samples / on other samples", ylabel="subnetworks")
    ax.set_title(title or "Causal selectivity of moving the weights along each direction", fontsize=9)
    ax.legend(fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def layer_shares(block_shares: Tensor, blocks: Sequence[str], layer_shares: Tensor, layers: Sequence[str],
                 span_share: float, title: str = "") -> plt.Figure:
    """Where a whole-model decomposition's subnetworks live. Left: every subnetwork's decoder shares per block
    (block_shares (C, blocks), stacked), subnetworks ordered by their share in the last layer; right: histogram of
    the share of the layer each holds least of among its two largest (layer_shares (C, layers)), with `span_share`,
    the share from which a subnetwork counts as spanning two layers."""
    order = torch.argsort(layer_shares[:, -1], stable=True)
    shares = block_shares[order].numpy()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 3.6), gridspec_kw={"width_ratios": [3, 1.2]})
    bottom = np.zeros(shares.shape[0])
    colours = plt.get_cmap("tab20")
    for b, name in enumerate(blocks):
        ax.bar(np.arange(shares.shape[0]), shares[:, b], bottom=bottom, width=1.0, color=colours(b % 20), label=name)
        bottom += shares[:, b]
    ax.set(xlim=(-0.5, shares.shape[0] - 0.5), ylim=(0, 1), xlabel=f"live subnetworks, by their share in {layers[-1]}",
           ylabel="share of ||d_k||²")
    ax.legend(fontsize=8, ncol=min(len(blocks), 4), loc="upper left", framealpha=0.9)
    second = (layer_shares.sort(1, descending=True).values[:, 1] if layer_shares.shape[1] > 1
              else torch.zeros(len(order)))
    spans = int((second >= span_share).sum())
    bx.hist(second.numpy(), bins=np.linspace(0, 0.5, 26), color="C0")
    bx.axvline(span_share, color="k", ls="--", lw=1)
    bx.set(xlabel="share of the second layer", ylabel="subnetworks",
           title=f"{spans} of {len(second)} hold ≥ {span_share:g} in two layers")
    bx.title.set_fontsize(9)
    for a in (ax, bx):
        a.spines[["top", "right"]].set_visible(False)
    fig.suptitle(title or "Where each subnetwork's decoder direction lives", fontsize=10)
    fig.tight_layout()
    return fig


def pattern_purity_bars(best_purity: dict[str, float], threshold: float = 0.8) -> plt.Figure:
    """The best purity of a subnetwork serving each pattern as bars, those at or above `threshold` (owned) green."""
    values = list(best_purity.values())
    owned = sum(v >= threshold for v in values)
    fig, ax = plt.subplots(figsize=(10, 3.5))
    ax.bar(list(best_purity), values, color=["C2" if v >= threshold else "C0" for v in values])
    ax.axhline(threshold, color="k", ls="--", lw=1)
    ax.set(ylabel="best purity", ylim=(0, 1.05),
           title=f"Best subnetwork purity per pattern: {owned} of {len(values)} patterns owned")
    ax.tick_params(axis="x", rotation=60)
    fig.tight_layout()
    return fig


def purity_histogram(purity: Sequence[float] | Tensor, title: str = "",
                     xlabel: str = "class purity of the top images") -> plt.Figure:
    """Histogram of the subnetworks' purities in ten bins over [0, 1]. purity: (C,)."""
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(torch.as_tensor(purity, dtype=torch.float32).cpu().numpy(), bins=torch.linspace(0, 1, 11).numpy())
    ax.set(xlabel=xlabel, ylabel="subnetworks", title=title)
    ax.title.set_fontsize(9)
    fig.tight_layout()
    return fig


def top_images(images: Tensor, top: Tensor, subnetworks: Sequence[int], labels: Tensor, class_names: Sequence[str],
               titles: Sequence[str] | None = None, title: str = "Each subnetwork's top images by impact",
               note_label: str = "top affected logits") -> plt.Figure:
    """Each listed subnetwork's top images as a row, left to right by impact I(x, v_k) (`l3d.impact`,
    `l3d.top_samples`), its true class under each image, "subnetwork k" at the left and
    "{note_label}: {titles[r]}" over the row. images: (N, channels, height, width) in [0, 1] (one channel: drawn
    grey); top: (C, n) indices into images, best first; labels: (N,) class of each image."""
    n = top.shape[1]
    fig, axes = plt.subplots(len(subnetworks), n, figsize=(1.3 * n, 1.55 * len(subnetworks)), squeeze=False)
    for r, k in enumerate(subnetworks):
        for c, i in enumerate(top[k].tolist()):
            ax, image = axes[r, c], images[i].detach().cpu()
            grey = image.shape[0] == 1
            ax.imshow(image[0] if grey else image.permute(1, 2, 0), cmap="gray_r" if grey else None)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(class_names[int(labels[i])], fontsize=7, labelpad=1)
        axes[r, 0].set_ylabel(f"subnetwork {k}", fontsize=8)
        if titles is not None:
            axes[r, n // 2].set_title(f"{note_label}: {titles[r]}", fontsize=7)
    fig.suptitle(f"{title}\nrows: subnetworks; images left to right by impact, true class under each", fontsize=9)
    fig.tight_layout()
    return fig
