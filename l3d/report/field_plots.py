"""Figures of notebook 07: L3D's per-seed MMCS and ML2R beside APD's and SPD's published numbers, and where a
decomposition's subnetworks put their weight."""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
from torch import Tensor


def seed_scores(rows: Sequence[dict], published: dict[str, dict], settings: Sequence[str]) -> plt.Figure:
    """Per setting, every seed's MMCS (left) and ML2R (right) as dots, APD's and SPD's published values as markers.

    rows: metrics rows with setting, mmcs, ml2r; published: setting -> {"APD"/"SPD": {"mmcs", "ml2r"}}."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, key, label in ((axes[0], "mmcs", "MMCS"), (axes[1], "ml2r", "ML2R")):
        labelled = set()
        for x, setting in enumerate(settings):
            values = [r[key] for r in rows if r["setting"] == setting]
            kind = next((k for k in ("random", "sparse", "refit") if k in setting), "main")
            colour, legend = {"random": ("grey", "L3D, untrained toy"), "sparse": ("C1", "L3D, sparser samples"),
                              "refit": ("C4", "L3D, refitted"), "main": ("C0", "L3D, one seed")}[kind]
            ax.scatter([x + 0.08 * (i - (len(values) - 1) / 2) for i in range(len(values))], values, s=22,
                       color=colour, zorder=3, label=None if kind in labelled else legend)
            labelled.add(kind)
            for method, marker, colour in (("SPD", "_", "C3"), ("APD", "_", "C2")):
                if method in published.get(setting, {}):
                    ax.scatter([x], [published[setting][method][key]], marker=marker, s=500, color=colour, zorder=2,
                               label=f"{method} (published)" if setting == "5-2" else None)
        ax.set_xticks(range(len(settings)), settings, rotation=30, ha="right", rotation_mode="anchor")
        ax.set_ylabel(label)
        ax.axhline(1.0, color="black", lw=0.5, ls=":")
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].legend(fontsize=8, loc="lower left")
    axes[0].set_title("best |cos| per feature, averaged (MMCS)")
    axes[1].set_title("norm of the best subnetwork's column / the model's (ML2R)")
    fig.tight_layout()
    return fig


def column_shares(shares: Tensor, pairs: Sequence[tuple[int, int]], matched_cos: Sequence[float], title: str = "",
                  threshold: float = 0.95) -> plt.Figure:
    """Left: each subnetwork's share of its linear1 norm per feature (C, F), subnetworks ordered by their matched
    feature (a clean decomposition is a diagonal); right: each feature's matched |cos|, below `threshold` in red."""
    order = [k for _, k in sorted(pairs)] + [k for k in range(shares.shape[0]) if k not in {k for _, k in pairs}]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1.4, 1]})
    image = axes[0].imshow(shares[order].T, vmin=0, vmax=1, cmap="magma", aspect="auto")
    axes[0].set_xlabel("subnetwork (ordered by matched feature)")
    axes[0].set_ylabel("feature (column of linear1)")
    fig.colorbar(image, ax=axes[0], label="share of the subnetwork's linear1 norm")
    cos = [matched_cos[i] for i in range(len(matched_cos))]
    features = [i for i, _ in pairs]
    axes[1].bar(features, cos, color=["C3" if c < threshold else "C0" for c in cos])
    axes[1].axhline(threshold, color="black", lw=0.6, ls="--")
    axes[1].set_ylim(0, 1.02)
    axes[1].set_xlabel("feature")
    axes[1].set_ylabel("|cos| of its matched subnetwork")
    axes[1].spines[["top", "right"]].set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
