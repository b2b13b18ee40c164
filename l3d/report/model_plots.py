"""Figures of the model notebooks beyond plots.py: causal selectivity against random directions (05, 06, 08), where a
whole-model decomposition's subnetworks live (08), and two trainings side by side (06: the paper's loss and
resampling)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

from ..history import History


def selectivity_histogram(ratio: Sequence[float], random_ratio: Sequence[float], threshold: float,
                          title: str = "") -> plt.Figure:
    """Histograms of the causal selectivity ρ (`l3d.experiments.causal`) of the decomposition's subnetworks and of
    random directions of the same form (paired: ratio[k] and random_ratio[k] are subnetwork k and its random twin),
    on a log scale, with both medians marked. The threshold applies to each pair, ρ_k / its twin's (not to ρ
    itself), so it is not a line on this axis: the legend gives the share of pairs at or above it."""
    ours, rand = np.asarray(ratio, dtype=float), np.asarray(random_ratio, dtype=float)
    both = np.concatenate([ours, rand])
    both = both[both > 0]
    bins = np.logspace(np.log10(both.min()) - 0.05, np.log10(both.max()) + 0.05, 40)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for values, colour, label in ((rand, "0.6", "random directions (same ranks, norm)"),
                                  (ours, "C0", "L3D subnetworks")):
        ax.hist(values, bins=bins, color=colour, alpha=0.75, label=f"{label}: median {np.median(values):.3g}")
        ax.axvline(np.median(values), color=colour, lw=1.5)
    selective = float(np.mean(ours >= threshold * rand)) if len(ours) else 0.0
    ax.plot([], [], " ", label=f"selective (ρ ≥ {threshold:g} × its twin's): {selective:.0%}")
    ax.set_xscale("log")
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


def trainings_side_by_side(histories: Mapping[str, History], title: str = "") -> plt.Figure:
    """Two or more trainings of the same decomposition: reconstruction error (left) and dead subnetworks (right)
    per epoch, one line each; resamplings that replaced a subnetwork marked on the dead count."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 3.4))
    for i, (label, history) in enumerate(histories.items()):
        epochs = np.arange(1, len(history.reconstruction_error) + 1)
        ax.plot(epochs, history.reconstruction_error, color=f"C{i}", label=label)
        dead = [sum(p == 0 for p in epoch) for epoch in history.p_act]
        bx.plot(epochs, dead, color=f"C{i}", label=label)
        replaced = [r["epoch"] for r in history.resampled if r["replaced"]]
        if replaced:
            # re-seeded at the start of 0-based epoch e: the record of that epoch is plotted at e + 1
            bx.scatter([e + 1 for e in replaced], [dead[e] for e in replaced], color=f"C{i}", marker="|", s=60,
                       label=f"{label}: a subnetwork re-seeded at the epoch's start")
    ax.set(xlabel="epoch", ylabel="reconstruction error (training)")
    bx.set(xlabel="epoch", ylabel="dead subnetworks (P_act = 0)")
    for a in (ax, bx):
        a.legend(fontsize=8)
        a.grid(alpha=0.3)
        a.spines[["top", "right"]].set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
