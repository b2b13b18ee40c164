"""Figures of the toy notebooks (01-04): intervention sweeps and the effect matrix (paper Fig. 4), subnetwork
directions against the true features (paper Fig. S2), derived coefficients against the true ones (paper Fig. 6),
and the label diagnostic. Every function takes plain tensors and returns a matplotlib Figure (save it with
`l3d.report.results.save_figure`)."""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.colors import TwoSlopeNorm
from torch import Tensor


def intervention_sweeps(
    deltas: Sequence[float] | Tensor,
    effect: Tensor,
    own: Sequence[int | Sequence[int] | None] | None = None,
    titles: Sequence[str] | None = None,
    output_labels: Sequence[str] | None = None,
    ncols: int = 5,
) -> plt.Figure:
    """Mean |Δ output| against δ, one panel per intervention and one line per output (paper Fig. 4, left).

    effect: (S, len(deltas), O), e.g. from `l3d.intervention_sweep`. `own[s]` names the output(s)
    intervention s is meant to move; those are drawn bold, the others thin and grey.
    """
    effect = effect.detach().float().cpu()
    if effect.dim() != 3:
        raise ValueError(f"effect must be (interventions, deltas, outputs), got shape {tuple(effect.shape)}")
    S, _, O = effect.shape  # noqa: E741 (O: the number of outputs, as in the docstring's shapes)
    deltas = torch.as_tensor(deltas).float().cpu()
    titles = list(titles) if titles is not None else [f"subnetwork {s}" for s in range(S)]
    labels = list(output_labels) if output_labels is not None else [f"output {j}" for j in range(O)]
    ncols = min(ncols, S)
    nrows = -(-S // ncols)
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True,
                             figsize=(2.6 * ncols, 2.2 * nrows + 0.4))
    colors = plt.get_cmap("tab10" if O <= 10 else "tab20")
    for s in range(S):
        ax = axes[s // ncols, s % ncols]
        mine = set() if own is None or own[s] is None else {own[s]} if isinstance(own[s], int) else set(own[s])
        for j in range(O):
            if j in mine:
                ax.plot(deltas, effect[s, :, j], color=colors(j % colors.N), lw=2.2, label=labels[j], zorder=3)
            else:
                ax.plot(deltas, effect[s, :, j], color="0.6" if mine else colors(j % colors.N), lw=0.9,
                        label=None if mine else labels[j])
        ax.set_title(titles[s] + (f" → {', '.join(labels[j] for j in sorted(mine))}" if mine else ""), fontsize=8)
        ax.grid(alpha=0.3)
    for s in range(S, nrows * ncols):
        axes[s // ncols, s % ncols].axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("δ")
    for ax in axes[:, 0]:
        ax.set_ylabel("mean |Δ output|")
    if own is None:
        axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def effect_matrix(
    effect: Tensor,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    title: str = "mean |Δ output| under intervention",
    cmap: str = "viridis",
) -> plt.Figure:
    """Heatmap of an (S, O) matrix, e.g. each intervention's mean change of each output (paper Fig. 4, right)."""
    effect = effect.detach().float().cpu()
    S, O = effect.shape  # noqa: E741 (O: the number of outputs, as in the docstring's shapes)
    fig, ax = plt.subplots(figsize=(0.55 * O + 2.2, 0.45 * S + 1.2))
    image = ax.imshow(effect, cmap=cmap, aspect="auto")
    ax.set_xticks(range(O), list(col_labels) if col_labels is not None else range(O), rotation=90 if O > 8 else 0)
    ax.set_yticks(range(S), list(row_labels) if row_labels is not None else [f"subnetwork {s}" for s in range(S)])
    ax.set_xlabel("output")
    ax.set_title(title, fontsize=9)
    if S * O <= 400:
        top = float(effect.max()) or 1.0
        for s in range(S):
            for j in range(O):
                ax.text(j, s, f"{effect[s, j]:.2g}", ha="center", va="center", fontsize=6,
                        color="black" if effect[s, j] > 0.6 * top else "white")
    fig.colorbar(image, ax=ax, fraction=0.05)
    fig.tight_layout()
    return fig


def direction_cosines(
    cos: Tensor,
    pairs: Sequence[tuple[int, int]],
    features: Tensor | None = None,
    directions: Tensor | None = None,
    feature_label: str = "feature",
) -> plt.Figure:
    """How well subnetworks line up with ground-truth directions (paper Fig. S2).

    cos: (F, C) |cos| between each true feature direction and each subnetwork's direction; pairs: the
    one-to-one (feature, subnetwork) matching. Left: the |cos| matrix with subnetworks ordered by their
    matched feature, matched pairs boxed. Right, when `features` (F, 2) and `directions` (F, 2) (the
    matched subnetworks' directions) are 2-D: the feature embeddings as arrows with the matched
    subnetwork directions drawn over them (sign aligned).
    """
    cos = cos.detach().float().cpu()
    F, C = cos.shape
    order = [k for _, k in sorted(pairs)] + [k for k in range(C) if k not in {k for _, k in pairs}]
    planar = features is not None and directions is not None and features.shape[-1] == 2
    fig, axes = plt.subplots(1, 2 if planar else 1, squeeze=False, figsize=(9.5 if planar else 5, 4))
    ax = axes[0, 0]
    image = ax.imshow(cos[:, order], vmin=0, vmax=1, cmap="magma", aspect="auto")
    ax.set_xticks(range(C), [str(k) for k in order])
    ax.set_yticks(range(F), [f"{feature_label} {i}" for i in range(F)])
    ax.set_xlabel("subnetwork (ordered by matched feature)")
    for i, k in pairs:
        x = order.index(k)
        ax.add_patch(plt.Rectangle((x - 0.5, i - 0.5), 1, 1, fill=False, ec="cyan", lw=2))
        if F * C <= 400:
            ax.text(x, i, f"{cos[i, k]:.2f}", ha="center", va="center", fontsize=7, color="black")
    ax.set_title("|cos| (feature, subnetwork)", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.05)
    if planar:
        ax = axes[0, 1]
        features = features.detach().float().cpu()
        directions = directions.detach().float().cpu()
        colors = plt.get_cmap("tab10")
        reach = float(features.norm(dim=1).max())
        for i in range(F):
            f, d = features[i], directions[i]
            d = d * torch.sign(f @ d + 1e-30) / d.norm().clamp_min(1e-30) * f.norm()
            ax.annotate("", xy=f.tolist(), xytext=(0, 0),
                        arrowprops={"arrowstyle": "-|>", "color": colors(i % 10), "lw": 2})
            ax.plot([0, d[0]], [0, d[1]], ls="--", color="k", lw=1)
            ax.text(*(1.08 * f).tolist(), str(i), color=colors(i % 10), ha="center", va="center")
        ax.set_xlim(-1.2 * reach, 1.2 * reach)
        ax.set_ylim(-1.2 * reach, 1.2 * reach)
        ax.set_aspect("equal")
        ax.axhline(0, color="0.8", lw=0.5)
        ax.axvline(0, color="0.8", lw=0.5)
        ax.set_title("embeddings (arrows), matched subnetworks (dashed)", fontsize=9)
    fig.tight_layout()
    return fig


def coefficients_scatter(true: Tensor, derived: Tensor, title: str = "") -> plt.Figure:
    """True coefficients against those derived from a decomposition: both as heatmaps, and one against the
    other as a scatter with the identity line (paper Fig. 6). true, derived: (n_out, n_in)."""
    true, derived = true.detach().float().cpu(), derived.detach().float().cpu()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
    top = float(max(true.abs().max(), derived.abs().max())) or 1.0
    for ax, matrix, name in zip(axes[:2], (true, derived), ("true A", "derived â")):
        image = ax.imshow(matrix, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -top, top))
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("input")
        ax.set_ylabel("output")
    fig.colorbar(image, ax=axes[1], fraction=0.05)
    ax = axes[2]
    ax.scatter(true.flatten(), derived.flatten(), s=10, alpha=0.7)
    low, high = min(0.0, float(derived.min())), max(float(true.max()), float(derived.max()))
    ax.plot([low, high], [low, high], color="k", lw=0.8, ls="--")
    ax.set_xlabel("true A_ij")
    ax.set_ylabel("derived â_ij")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    return fig


def label_diagnostic(rows: Sequence[dict]) -> plt.Figure:
    """Lowest impact share against reconstruction error, one colour per seed: L3D (circle), the decomposition trained
    with the labels (triangle) and then with the paper's loss (square; the arrow). rows: one per seed with "seed"
    and reconstruction_error, min_impact_share, each also prefixed "aligned_" and "aligned_then_paper_"."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for row, color in zip(rows, plt.cm.tab10.colors):
        points = {stage: (row[f"{prefix}reconstruction_error"], row[f"{prefix}min_impact_share"])
                  for stage, prefix in (("L3D", ""), ("aligned", "aligned_"), ("then", "aligned_then_paper_"))}
        ax.scatter(*points["L3D"], marker="o", color=color, label=f"seed {row['seed']}")
        ax.scatter(*points["aligned"], marker="^", color=color)
        ax.scatter(*points["then"], marker="s", color=color)
        ax.annotate("", points["then"], points["aligned"], arrowprops={"arrowstyle": "->", "color": color})
    ax.axhline(0.8, color="grey", ls="--", lw=1)
    ax.set(xlabel="reconstruction error", ylabel="lowest impact share", ylim=(-0.02, 1.02),
           title="○ L3D   △ with labels   □ then the paper's loss")
    ax.legend(loc="lower right")   # the points sit high (impact share near 1): keep the legend off them
    return fig
