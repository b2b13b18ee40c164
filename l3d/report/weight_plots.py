"""Subnetworks' weights as heatmaps: each subnetwork's direction in parameter space, one panel per tensor
(`subnetwork_heatmaps`), or in the order of the circuits matched to them (`matched_subnetworks`). Every function takes
plain tensors and returns a matplotlib Figure (save it with `l3d.report.results.save_figure`)."""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.colors import TwoSlopeNorm
from torch import Tensor


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


def index_ticks(n: int, cell: float) -> list[int]:
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
            ax.set_xticks(index_ticks(w, cell) if w > 1 else [])
            ax.set_yticks(index_ticks(h, cell) if h > 1 else [])
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


def matched_subnetworks(directions: dict[str, Tensor], found, circuit: str = "circuit {}", cell_size: float = 0.35,
                        title: str = "Subnetwork directions in parameter space",
                        axis_labels: dict[str, tuple[str, str]] | None = None) -> plt.Figure:
    """`subnetwork_heatmaps` with the subnetworks in the order of the circuits matched to them and labelled with
    them, unmatched ones last (`found`: an `l3d.experiments.ground_truth.Recovery`; `circuit` formats a circuit).
    directions: name -> (C, *shape)."""
    order, labels = found.ordered(circuit)
    return subnetwork_heatmaps(directions, subnetworks=order, row_labels=labels, cell_size=cell_size, title=title,
                               axis_labels=axis_labels)
