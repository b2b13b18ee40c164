"""Figures shared by the notebooks: subnetwork weights, intervention sweeps, directions against ground truth,
training history. Every function takes plain tensors and returns a matplotlib Figure (save it with
`l3d.report.results.save_figure`)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.colors import TwoSlopeNorm
from torch import Tensor

from ..runtime.medians import lower_median
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


# subnetwork_heatmaps' layout, in inches: the figure is kept within MAX_FIGURE (width, height) by shrinking the cells
# below cell_size (to MIN_CELL at most) and, for many tall subnetworks, by setting their blocks side by side
MAX_FIGURE = (14.0, 18.0)
MIN_CELL = 0.03
TICK_SPACING = 0.16      # inches between two index tick labels at least (6 pt digits)
CHAR_WIDTH = 0.065       # inches per character of an 8 pt label
GAP_X, GAP_Y = 0.5, 0.4  # between panels: the y ticks and label; the x ticks under every row
TOP, BOTTOM, BAR = 0.75, 0.75, 1.15   # the title and column names; the bottom x labels; a colour bar with its labels


def _index_ticks(n: int, cell: float) -> list[int]:
    """Positions of index ticks along an axis of n cells of `cell` inches: every index when they fit, else every
    1, 2 or 5 × 10^k-th (and the last index when it is far enough from the last of those)."""
    step = 1
    while step * cell < TICK_SPACING:
        step = next(s * 10 ** k for k in range(6) for s in (1, 2, 5) if s * 10 ** k > step)
    ticks = list(range(0, n, step))
    if n - 1 - ticks[-1] >= 0.75 * step:   # the last index, where it does not crowd the last tick
        ticks.append(n - 1)
    return ticks


def _heatmap_layout(shapes: list[tuple[int, int]], texts: list[int], label: int, n_rows: int, cell_size: float,
                    blocks: int) -> dict:
    """Sizes in inches of `subnetwork_heatmaps` with the subnetworks in `blocks` columns of blocks (one block: a
    subnetwork's panels, left to right, and its colour bar): the cell, every column's width (at least its longest
    text, `texts` characters, less one gap: a title centred over a column may reach into the gaps beside it),
    a block's width, the label margin, a row's height, and the figure's size."""
    per_column = -(-n_rows // blocks)
    height = max(h for h, _ in shapes)
    left = CHAR_WIDTH * label + 0.6
    fixed = left + GAP_X * (len(shapes) - 1) + BAR
    cell = min(cell_size, (MAX_FIGURE[0] / blocks - fixed) / sum(w for _, w in shapes),
               (MAX_FIGURE[1] - TOP - BOTTOM - GAP_Y * (per_column - 1)) / (height * per_column))
    cell = max(MIN_CELL, cell)
    least = [CHAR_WIDTH * t - GAP_X for t in texts]   # a column's width for its title and x label
    for _ in range(len(shapes)):   # columns as wide as their texts leave less room for the cells: shrink them more
        widths = [max(cell * w, t) for (_, w), t in zip(shapes, least)]
        block = left + sum(widths) + GAP_X * (len(shapes) - 1) + BAR
        excess = block - MAX_FIGURE[0] / blocks
        drawn = sum(w for (_, w), t in zip(shapes, least) if cell * w > t)   # cells in columns wider than their texts
        if excess <= 1e-9 or not drawn or cell <= MIN_CELL:
            break
        cell = max(MIN_CELL, cell - excess / drawn)
    size = (block * blocks, TOP + per_column * cell * height + GAP_Y * (per_column - 1) + BOTTOM)
    return {"cell": cell, "widths": widths, "block": block, "left": left, "row": cell * height, "size": size,
            "per_column": per_column}


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
    weights with C = 1. One block per subnetwork: a row of panels, one per tensor, every entry one square cell
    with its index ticked along both axes; colours share one symmetric scale per block (directions are defined up
    to sign, so only relative signs matter), shown by the block's colour bar. title: the figure's title (name the
    paper figure, e.g. "… (paper Fig. 3)"). axis_labels: tensor name -> (y label, x label) of its panels, e.g.
    {"W_in": ("hidden", "feature")}; tensors not named get the dimensions they show ("dim 0 (2)", "dim 1 (5)").
    cell_size: the largest cell, in inches. The figure stays within MAX_FIGURE inches: cells shrink (to MIN_CELL
    at least), and when that leaves larger cells, blocks go side by side (in up to 4 columns, top to bottom
    first), whatever the number of subnetworks and the tensors' sizes.
    """
    names = list(directions)
    C = next(iter(directions.values())).shape[0]
    rows = list(range(C)) if subnetworks is None else list(subnetworks)
    labels = list(row_labels) if row_labels is not None else [f"subnetwork {k}" for k in rows]
    if len(labels) != len(rows):
        raise ValueError(f"{len(labels)} row labels for {len(rows)} subnetworks")
    mats = {n: [_as_matrix(directions[n][k]) for k in rows] for n in names}
    axis_labels = {n: _mode_labels(tuple(directions[n].shape[1:])) for n in names} | (axis_labels or {})
    shapes = [tuple(mats[n][0].shape) for n in names]                         # (height, width) in cells
    texts = [max(len(n), len(axis_labels[n][1])) for n in names]
    options = [_heatmap_layout(shapes, texts, max(map(len, labels)), len(rows), cell_size, blocks)
               for blocks in range(1, min(4, len(rows)) + 1)]
    # the largest cells; a layout at least twice as tall as wide counts its cells 15 % smaller
    layout = max(options, key=lambda o: o["cell"] * (0.85 if o["size"][1] > 2 * o["size"][0] else 1.0))
    cell, widths, fig_width, fig_height = layout["cell"], layout["widths"], *layout["size"]
    fig = plt.figure(figsize=(fig_width, fig_height))

    def box(x: float, y: float, w: float, h: float) -> list[float]:   # inches from the top left -> figure fraction
        return [x / fig_width, 1 - (y + h) / fig_height, w / fig_width, h / fig_height]

    for r, label in enumerate(labels):
        column, row = divmod(r, layout["per_column"])
        last = row == layout["per_column"] - 1 or r == len(rows) - 1   # the lowest block of its column
        scale = max(float(mats[n][r].abs().max()) for n in names) or 1.0
        norm = TwoSlopeNorm(0.0, -scale, scale)
        y = TOP + row * (layout["row"] + GAP_Y)
        x = column * layout["block"] + layout["left"]
        for c, n in enumerate(names):
            h, w = shapes[c]
            ax = fig.add_axes(box(x + (widths[c] - cell * w) / 2, y, cell * w, cell * h))   # top-aligned in its row
            image = ax.imshow(mats[n][r], cmap=cmap, norm=norm, aspect="equal", interpolation="nearest")
            ax.set_xticks(_index_ticks(w, cell) if w > 1 else [])
            ax.set_yticks(_index_ticks(h, cell) if h > 1 else [])
            ax.tick_params(labelsize=6, length=2, pad=1)
            ax.set_ylabel(axis_labels[n][0], fontsize=7, labelpad=2)
            if row == 0:
                ax.set_title(n, fontsize=9)
            if last:
                ax.set_xlabel(axis_labels[n][1], fontsize=7, labelpad=2)
            if c == 0:   # the block's label, left of its panels, at the middle of the row
                ax.annotate(label, ((x - 0.55) / fig_width, 1 - (y + layout["row"] / 2) / fig_height),
                            xycoords="figure fraction", fontsize=8, ha="right", va="center")
            x += widths[c] + GAP_X
        colorbar = fig.colorbar(image, cax=fig.add_axes(box(x - GAP_X + 0.25, y, 0.12, layout["row"])))
        colorbar.set_label("weight", fontsize=7)
        colorbar.ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=10, y=1 - 0.25 / fig_height, va="center")
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


def moving_mean(values: Sequence[float], window: int) -> list[float]:
    """The mean of each value with its neighbours, `window` values centred on it (an even window reaches one further
    back than forward; fewer values at the ends); NaN is skipped (a window of NaN only gives NaN)."""
    x = torch.tensor([float(v) for v in values], dtype=torch.float64)
    ok = ~torch.isnan(x)
    sums = torch.cat([torch.zeros(1, dtype=x.dtype), torch.where(ok, x, 0).cumsum(0)])
    counts = torch.cat([torch.zeros(1, dtype=x.dtype), ok.to(x.dtype).cumsum(0)])
    i = torch.arange(len(x))
    lo, hi = (i - window // 2).clamp(min=0), (i + (window - 1) // 2 + 1).clamp(max=len(x))
    return ((sums[hi] - sums[lo]) / (counts[hi] - counts[lo])).tolist()


def _plain_log_ticks(ax: plt.Axes) -> None:
    """A log y axis labelled in plain decimals (0.05, 0.1, 0.2) at 1, 2 and 5 × 10^k, no minor labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def training_history(history: History | dict, title: str = "", warm_start_epochs: int = 0,
                     p_act: str = "epochs") -> plt.Figure:
    """Left: the reconstruction error of every epoch (thin; it moves from epoch to epoch because every epoch draws
    fresh references) and its moving mean over a twentieth of the epochs (bold), with the dropped energy
    S / Σ‖g‖² when fit ran with silence > 0 (dashed) and the warm-start epochs (every coefficient kept) shaded.
    The axis is logarithmic, labelled in plain decimals, when the error spans more than a factor of 10, else
    linear. Right: P_act, the fraction of samples selecting each subnetwork, as a heatmap of subnetwork against
    epoch (p_act="epochs"; dead subnetworks, never selected in the last epoch, marked on the axis), or as a
    histogram over subnetworks in the last epoch (p_act="last"). A dict is read as `History.from_dict` reads it."""
    if p_act not in ("epochs", "last"):
        raise ValueError(f"p_act must be 'epochs' or 'last', got {p_act!r}")
    h = history if isinstance(history, History) else History.from_dict(history)
    error = h.reconstruction_error
    activity = torch.tensor(h.p_act, dtype=torch.float32)   # (epochs, C)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), width_ratios=(1.15, 1))
    epochs = list(range(1, len(error) + 1))
    window = max(1, round(len(error) / 20))
    if warm_start_epochs:
        left.axvspan(0.5, warm_start_epochs + 0.5, color="0.9", label="warm start (every coefficient kept)")
    left.plot(epochs, error, lw=0.6, color="C0", alpha=0.45 if window > 1 else 1.0, label="reconstruction error")
    if window > 1:   # the warm start and the rest each their own mean: BatchTopK changes the error at the switch
        cut = min(max(warm_start_epochs, 0), len(error))
        smooth = moving_mean(error[:cut], window) + moving_mean(error[cut:], window) if cut else \
            moving_mean(error, window)
        left.plot(epochs, smooth, lw=2, color="C0", label=f"its mean over {window} epochs")
    if h.dropped_energy:
        dropped = [v if v > 0 else float("nan") for v in h.dropped_energy]
        left.plot(epochs, dropped, ls="--", color="C1", label="dropped coefficients, S / Σ‖g‖²")
    shown = [v for v in [*error, *h.dropped_energy] if v > 0 and not math.isnan(v)]
    if shown and max(shown) > 10 * min(shown):
        left.set_yscale("log")
        _plain_log_ticks(left)
    else:
        left.set_ylim(bottom=0)
    left.legend(fontsize=7)
    left.set_xlabel("epoch")
    left.set_ylabel("reconstruction error")
    left.grid(alpha=0.3, which="major")
    last = activity[-1] if len(activity) else torch.zeros(0)
    dead = [k for k in range(last.shape[0]) if last[k] == 0]
    if p_act == "last":
        right.hist(last.numpy(), bins=30)
        right.set_xlabel("P_act (fraction of samples selecting the subnetwork)")
        right.set_ylabel("subnetworks")
        right.set_title(f"P_act in the last epoch; dead: {len(dead) / max(1, last.shape[0]):.0%}", fontsize=9)
        right.grid(alpha=0.3)
    else:
        C = activity.shape[1] if activity.dim() == 2 else 0
        trained = activity[min(max(warm_start_epochs, 0), len(activity) - 1):]   # the warm start keeps every one
        top = float(trained.max()) if trained.numel() else 1.0
        image = right.imshow(activity.T, aspect="auto", cmap="viridis", vmin=0, vmax=top or 1.0,
                             interpolation="nearest", extent=(0.5, len(error) + 0.5, C - 0.5, -0.5))
        ticks = _index_ticks(C, 2.6 / max(C, 1)) if C else []
        right.set_yticks(ticks, [f"{k} (dead)" if k in dead else str(k) for k in ticks], fontsize=7)
        right.set_xlabel("epoch")
        right.set_ylabel("subnetwork")
        right.set_title(f"P_act per subnetwork and epoch; dead in the last epoch: {len(dead)} of {C}", fontsize=9)
        bar = fig.colorbar(image, ax=right, fraction=0.05, pad=0.02, extend="max" if warm_start_epochs else "neither")
        bar.set_label("P_act" + (" (warm start: 1)" if warm_start_epochs else ""), fontsize=8)
        bar.ax.tick_params(labelsize=7)
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
    (the lower one for an even count of seeds, `lower_median`) as a line (paper Fig. S5, S11).
    errors: (n_seeds, len(values)), or seed -> one error per value.
    title: default "Reconstruction error against <xlabel>" (name the paper figure in it)."""
    errors = torch.tensor(list(errors.values()) if isinstance(errors, dict) else errors, dtype=torch.float32)
    values = list(values)
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    for s, row in enumerate(errors):
        ax.scatter(values, row, color="0.5", s=14, zorder=2, label="one seed" if s == 0 else None)
    ax.plot(values, lower_median(errors, 0), marker="o", label="median over seeds", zorder=3)
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
