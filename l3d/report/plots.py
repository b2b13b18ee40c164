"""Figures shared by the notebooks: subnetwork weights, intervention sweeps, directions against ground truth,
training history. Every function takes plain tensors and returns a matplotlib Figure (save it with
`l3d.report.results.save_figure`)."""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.colors import TwoSlopeNorm
from torch import Tensor

from ..train import History


def _as_matrix(t: Tensor) -> Tensor:
    """A tensor drawn as a 2-D image: vectors as one column, higher-order tensors with trailing modes flattened."""
    t = t.detach().float().cpu()
    if t.dim() == 0:
        return t.view(1, 1)
    if t.dim() == 1:
        return t.view(-1, 1)
    return t.flatten(1)


def _mode_labels(shape: tuple[int, ...]) -> tuple[str, str]:
    """(y, x) axis labels of a tensor drawn by `_as_matrix`: which dimensions run down and across."""
    if len(shape) <= 1:
        return (f"dim 0 ({shape[0]})" if shape else "", "")
    across = " × ".join(str(n) for n in shape[1:])
    return f"dim 0 ({shape[0]})", f"dim 1 ({across})" if len(shape) == 2 else f"dims 1–{len(shape) - 1} ({across})"


def subnetwork_heatmaps(
    directions: dict[str, Tensor],
    subnetworks: Sequence[int] | None = None,
    row_labels: Sequence[str] | None = None,
    cell_size: float = 0.35,
    cmap: str = "RdBu_r",
    title: str = "Subnetwork directions in parameter space",
    axis_labels: dict[str, tuple[str, str]] | None = None,
) -> plt.Figure:
    """Each subnetwork's direction in parameter space, one heatmap per tensor (paper Fig. 3, 5, 7, 8).

    directions: name -> (C, *shape), e.g. `decomposition.decoder_directions()`, or the model's own
    weights with C = 1. One row of panels per subnetwork, one column per tensor; colours share one
    symmetric scale per row (directions are defined up to sign, so only relative signs matter), shown by
    the row's colour bar. title: the figure's title (name the paper figure, e.g. "… (paper Fig. 3)").
    axis_labels: tensor name -> (y label, x label) of its panels, e.g. {"W_in": ("hidden", "feature")};
    tensors not named get the dimensions they show ("dim 0 (2)", "dim 1 (5)").
    """
    names = list(directions)
    C = next(iter(directions.values())).shape[0]
    rows = list(range(C)) if subnetworks is None else list(subnetworks)
    labels = list(row_labels) if row_labels is not None else [f"subnetwork {k}" for k in rows]
    if len(labels) != len(rows):
        raise ValueError(f"{len(labels)} row labels for {len(rows)} subnetworks")
    mats = {n: [_as_matrix(directions[n][k]) for k in rows] for n in names}
    axis_labels = {n: _mode_labels(tuple(directions[n].shape[1:])) for n in names} | (axis_labels or {})
    # a column at least as wide as its title and axis label (about 0.075 inch per character at 8-9 pt)
    widths = [max(max(m.shape[1] for m in mats[n]), 0.075 * max(len(n), len(axis_labels[n][1])) / cell_size)
              for n in names]
    height = max(max(m.shape[0] for m in mats[n]) for n in names)
    fig_height = (cell_size * height + 0.6) * len(rows) + 1.0
    fig, axes = plt.subplots(
        len(rows), len(names), squeeze=False, gridspec_kw={"width_ratios": widths},
        figsize=(cell_size * sum(widths) + 1.2 * len(names) + 1.5, fig_height),
    )
    fig.subplots_adjust(top=1 - 0.8 / fig_height, bottom=0.35 / fig_height)   # room for the title and column names
    for r, label in enumerate(labels):
        scale = max(float(mats[n][r].abs().max()) for n in names) or 1.0
        norm = TwoSlopeNorm(0.0, -scale, scale)
        for c, n in enumerate(names):
            ax = axes[r, c]
            image = ax.imshow(mats[n][r], cmap=cmap, norm=norm, aspect="equal")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_ylabel(axis_labels[n][0], fontsize=7)
            if r == 0:
                ax.set_title(n, fontsize=9)
            if r == len(rows) - 1:
                ax.set_xlabel(axis_labels[n][1], fontsize=7)
            if c == 0:
                ax.annotate(label, (0, 0.5), xycoords="axes fraction", xytext=(-14, 0), textcoords="offset points",
                            fontsize=8, ha="right", va="center")
        bar = fig.colorbar(image, ax=list(axes[r]), fraction=0.02, pad=0.02)
        bar.set_label("weight", fontsize=7)
        bar.ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10, y=1 - 0.2 / fig_height)
    return fig


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
    S, _, O = effect.shape
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
    S, O = effect.shape
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


def training_history(history: History | dict, title: str = "", warm_start_epochs: int = 0,
                     p_act: str = "epochs") -> plt.Figure:
    """Reconstruction error per epoch (log scale), with the dropped energy when fit ran with silence > 0 and the
    warm-start epochs (every coefficient kept) shaded, and P_act: per subnetwork per epoch (p_act="epochs", dead
    ones at 0), or as a histogram over subnetworks in the last epoch (p_act="last", for many subnetworks).
    A dict is read as `History.from_dict` reads it."""
    if p_act not in ("epochs", "last"):
        raise ValueError(f"p_act must be 'epochs' or 'last', got {p_act!r}")
    h = history if isinstance(history, History) else History.from_dict(history)
    error = h.reconstruction_error
    activity = torch.tensor(h.p_act)   # (epochs, C)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    epochs = range(1, len(error) + 1)
    left.plot(epochs, error, label="reconstruction error")
    if warm_start_epochs:
        left.axvspan(0.5, warm_start_epochs + 0.5, color="0.9", label="warm start (top_k = 1)")
    if h.dropped_energy:
        left.plot(epochs, [v if v > 0 else float("nan") for v in h.dropped_energy], ls="--", label="dropped coefficients, S / Σ‖g‖²")
    if warm_start_epochs or h.dropped_energy:
        left.legend(fontsize=7)
    left.set_yscale("log")
    left.set_xlabel("epoch")
    left.set_ylabel("reconstruction error")
    left.grid(alpha=0.3, which="both")
    if p_act == "last":
        dead = float((activity[-1] == 0).float().mean())
        right.hist(activity[-1].numpy(), bins=30)
        right.set_xlabel("P_act (fraction of samples selecting the subnetwork)")
        right.set_ylabel("subnetworks")
        right.set_title(f"P_act in the last epoch; dead: {dead:.0%}", fontsize=9)
    else:
        lines = right.plot(epochs, activity, lw=0.8)
        if len(lines) <= 10:
            right.legend(lines, [f"subnetwork {k}" for k in range(len(lines))], fontsize=7, ncols=2)
        right.set_xlabel("epoch")
        right.set_ylabel("P_act per subnetwork")
    right.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
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


def error_against(values: Sequence[int], errors: dict[int, Sequence[float]] | Tensor, xlabel: str,
                  paper: Sequence[float] | None = None, title: str | None = None) -> plt.Figure:
    """Reconstruction error against a setting (rank, number of subnetworks): one dot per seed and the median
    as a line (paper Fig. S5, S11). errors: (n_seeds, len(values)), or seed -> one error per value.
    title: default "Reconstruction error against <xlabel>" (name the paper figure in it)."""
    errors = torch.tensor(list(errors.values()) if isinstance(errors, dict) else errors, dtype=torch.float32)
    values = list(values)
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    for s, row in enumerate(errors):
        ax.scatter(values, row, color="0.5", s=14, zorder=2, label="one seed" if s == 0 else None)
    ax.plot(values, errors.median(0).values, marker="o", label="median over seeds", zorder=3)
    if paper is not None:
        ax.plot(values, list(paper), ls="--", color="k", label="paper")
    top = max([float(errors.max()), *(paper if paper is not None else [])])
    ax.set_xticks(values)
    ax.set_ylim(0, 1.12 * top or 1.0)   # room above the highest dot, which a bare bottom=0 clipped
    ax.set_xlabel(xlabel)
    ax.set_ylabel("reconstruction error")
    ax.set_title(title if title is not None else f"Reconstruction error against {xlabel}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def matched_subnetworks(directions: dict[str, Tensor], found, circuit: str = "circuit {}", cell_size: float = 0.35,
                        title: str = "Subnetwork directions in parameter space",
                        axis_labels: dict[str, tuple[str, str]] | None = None) -> plt.Figure:
    """`subnetwork_heatmaps` with the subnetworks in the order of the circuits matched to them and labelled with
    them, unmatched ones last (`found`: an `l3d.experiments.ground_truth.Recovery`; `circuit` formats a circuit)."""
    order, labels = found.ordered(circuit)
    return subnetwork_heatmaps(directions, subnetworks=order, row_labels=labels, cell_size=cell_size, title=title,
                               axis_labels=axis_labels)


def label_diagnostic(rows: Sequence[dict]) -> plt.Figure:
    """Lowest purity against reconstruction error, one colour per seed: L3D (circle), the decomposition trained
    with the labels (triangle) and then with the paper's loss (square; the arrow). rows: one per seed with "seed"
    and reconstruction_error, min_purity, each also prefixed "aligned_" and "aligned_then_paper_"."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for row, color in zip(rows, plt.cm.tab10.colors):
        points = {stage: (row[f"{prefix}reconstruction_error"], row[f"{prefix}min_purity"])
                  for stage, prefix in (("L3D", ""), ("aligned", "aligned_"), ("then", "aligned_then_paper_"))}
        ax.scatter(*points["L3D"], marker="o", color=color, label=f"seed {row['seed']}")
        ax.scatter(*points["aligned"], marker="^", color=color)
        ax.scatter(*points["then"], marker="s", color=color)
        ax.annotate("", points["then"], points["aligned"], arrowprops={"arrowstyle": "->", "color": color})
    ax.axhline(0.8, color="grey", ls="--", lw=1)
    ax.set(xlabel="reconstruction error", ylabel="lowest purity", ylim=(-0.02, 1.02),
           title="○ L3D   △ with labels   □ then the paper's loss")
    ax.legend(loc="lower right")   # the points sit high (purity near 1): keep the legend off them
    return fig


def p_act_bars(p_act: Sequence[float] | Tensor, labels: Sequence[str] | None = None, title: str = "") -> plt.Figure:
    """P_act of every subnetwork as bars; dead subnetworks (P_act = 0) marked with a red cross."""
    p_act = torch.as_tensor(p_act, dtype=torch.float32).cpu()
    C = p_act.shape[0]
    fig, ax = plt.subplots(figsize=(0.45 * C + 2, 3))
    ax.bar(range(C), p_act, color=["C0" if p > 0 else "0.7" for p in p_act])
    dead = [k for k in range(C) if p_act[k] == 0]
    ax.scatter(dead, [0.0] * len(dead), marker="x", color="red", s=50, zorder=3, label="dead (P_act = 0)")
    ax.set_xticks(range(C), list(labels) if labels is not None else range(C), rotation=90 if C > 10 else 0, fontsize=8)
    ax.set_xlabel("subnetwork")
    ax.set_ylabel("P_act")
    ax.set_title(title, fontsize=9)
    if dead:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
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
    """Histogram of the subnetworks' purities in ten bins over [0, 1]."""
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
