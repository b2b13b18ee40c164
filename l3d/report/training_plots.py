"""How trainings went: a training's reconstruction error and P_act over the epochs (`training_history`), P_act of
every subnetwork at the end (`p_act_bars`), and the reconstruction error against a setting over seeds
(`error_against`). Every function takes plain numbers or tensors and returns a matplotlib Figure (save it with
`l3d.report.results.save_figure`)."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch
from torch import Tensor

from ..history import History
from ..runtime.medians import lower_median
from .weight_plots import index_ticks


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
        ticks = index_ticks(C, 2.6 / max(C, 1)) if C else []
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


def p_act_bars(p_act: Sequence[float] | Tensor, labels: Sequence[str] | None = None, title: str = "") -> plt.Figure:
    """P_act of every subnetwork as bars; dead subnetworks (P_act = 0) marked with a red cross. p_act: (C,)."""
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


def dead_per_epoch(histories: Mapping[str, History | dict], title: str = "") -> plt.Figure:
    """The share of dead subnetworks (P_act = 0) in every epoch, one line per run: name -> its History."""
    fig, ax = plt.subplots(figsize=(9, 3.2))
    for name, history in histories.items():
        p_act = (history if isinstance(history, History) else History.from_dict(history)).p_act
        dead = [100 * sum(p == 0 for p in epoch) / len(epoch) for epoch in p_act]
        ax.plot(range(1, len(dead) + 1), dead, marker="o", markersize=3, label=f"{name}: {dead[-1]:.1f} % at the end")
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("dead subnetworks (%)")
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))   # beside the lines, not on them
    ax.grid(alpha=0.3)
    fig.tight_layout()
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
