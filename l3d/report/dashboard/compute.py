"""`collect`: everything the dashboard shows, computed once from a decomposition and held-out inputs, and saved.

The core is shared by every kind of input (`kinds`): the impact of every subnetwork on every sample, each
subnetwork's row (impact statistics, top samples, the outputs its decoder direction moves, the subnetworks active
with it, its label and circuits), and an entry per input that is some subnetwork's top sample.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ...decomposition import Decomposition, batch_top_k
from ...experiments.subnetworks import label_purity
from ...gradients import GradientCollector
from ...impacts import impact as sample_impact
from ...impacts import top_samples
from ...runtime.atomic import write_file
from ...train import History
from .data import DATA, FORMAT, round_value, round_values
from .kinds import InputKind, input_kind
from .measures import circuit_cosines, coactive, output_effects

HISTOGRAM_BINS = 30
SHOWN_OUTPUTS = 12        # outputs up to this many are all drawn in the sweep; else the most moved ones
N_COACTIVE = 6


@dataclass(frozen=True)
class _Measured:
    """What is measured on all held-out samples at once; every subnetwork's row reads from it (C subnetworks,
    N samples)."""

    impact: Tensor                          # (N, C) on the CPU
    top: Tensor                             # (C, n_top) sample indices, largest impact first
    p_act: Tensor                           # (C,) of the last training epoch, else p_here
    p_here: Tensor                          # (C,) share of the samples on which each is active (BatchTopK)
    together: Tensor                        # (C, C) samples on which both are active
    labels: Tensor | None                   # (N,) a label per sample
    label_purity: tuple[Tensor, Tensor] | None  # (share (C,), label (C,)) of the top samples' most common label
    cosines: Tensor | None                  # (C, circuits) |cos| of d_k to each ground-truth circuit


@dataclass(frozen=True)
class _Probe:
    """How a decoder direction is probed: ∂f/∂δ at δ = 0 and the intervention sweep over `deltas`."""

    decomposition: Decomposition
    collector: GradientCollector
    deltas: Tensor                          # (D,)
    n_outputs: int


def collect(
    folder: str | os.PathLike,
    decomposition: Decomposition,
    collector: GradientCollector,
    inputs: Tensor,
    *,
    history: History | dict | None = None,
    impact: Tensor | None = None,
    n_ref: int = 10,
    seed: int = 0,
    n_top: int = 20,
    n_outputs: int = 5,
    deltas: Sequence[float] | Tensor | None = None,
    tokens: Tensor | None = None,
    decode: Callable[[list[int]], str] | None = None,
    labels: Tensor | None = None,
    label_names: Sequence[str] | None = None,
    ignore_label: int | None = None,
    output_names: Sequence[str] | None = None,
    feature_names: Sequence[str] | None = None,
    circuits: dict[str, Tensor] | None = None,
    circuit_names: Sequence[str] | None = None,
    notes: Sequence[str] | None = None,
    title: str = "L3D decomposition",
) -> Path:
    """Compute what the dashboard shows and save it to `folder` (data.json, and images.safetensors for images).

    inputs: held-out samples for the model (`collector.forward(collector.model, inputs)`): vectors (N, F),
        images (N, channels, H, W), or for sequence collectors token ids (N texts, L) whose every position is
        a sample (sample index = text · L + position).
    history: `l3d.fit`'s history (or its dict): the training curves, and P_act of its last epoch. Without it
        P_act is the share of `inputs` on which the subnetwork is active (see below).
    impact: `l3d.impact(decomposition, collector, inputs, n_ref, seed)` when already computed, else it is
        computed here with `n_ref` and `seed`. Top samples are `l3d.top_samples(impact, n_top)`.
    n_outputs: outputs listed as most raised and most lowered (∂f/∂δ at δ = 0, mean over the top samples).
    deltas: the intervention sweep's δ along the unit-norm decoder direction (default 9 values in [-1, 1]).
    tokens: sequences only, (N, L + 1) ids including the last target (default: `inputs`);
        decode: maps a list of ids to text (e.g. a tokenizer's decode); needed for sequences.
    labels: a known label per sample ((N,), or (N, L) for sequences, e.g. the corpus's pattern tags or the
        images' classes) with `label_names`; the page shows each subnetwork's most common label among its top
        samples and its share, the label purity (`l3d.experiments.subnetworks.label_purity`; a subnetwork whose
        top samples all carry `ignore_label`, e.g. the corpus's `none`, gets no label).
    output_names: a name per model output (class names, vocabulary); sequences default to decoded tokens.
    feature_names: a name per input feature, for vector inputs.
    circuits: toys, ground-truth circuit directions, name -> (M, *shape) over some decomposed tensors (e.g.
        `feature_circuits`), with `circuit_names`; the page shows each subnetwork's |cos| to each.
    notes: one line per subnetwork added to its summary (shown on its page and in the index, found by the filter),
        e.g. where its decoder direction lives (`l3d.experiments.whole_model.share_notes`).

    "Active" for co-activation: BatchTopK with the decomposition's top_k applied to the impact matrix of all of
    `inputs` at once. Returns `folder`.
    """
    folder = Path(folder)
    if notes is not None and len(notes) != decomposition.n_subnetworks:
        raise ValueError(f"notes must give one line per subnetwork ({decomposition.n_subnetworks}), got {len(notes)}")
    kind = input_kind(collector.sequence, inputs, tokens, decode)
    if isinstance(history, dict):
        history = History.from_dict(history)
    if impact is None:
        impact = sample_impact(decomposition, collector, inputs, n_ref=n_ref, seed=seed)
    measured = _measure(kind, decomposition, impact, n_top, history, labels, ignore_label, circuits)
    deltas = torch.linspace(-1, 1, 9) if deltas is None else torch.as_tensor(deltas, dtype=torch.float32).cpu()
    probe = _Probe(decomposition, collector, deltas, n_outputs)
    subnetworks = [_subnetwork(k, kind, measured, probe) for k in range(decomposition.n_subnetworks)]
    items = _items(kind, measured, subnetworks)
    data = {
        **_header(title, kind, measured, probe, history),
        "output_names": _output_names(kind, subnetworks, output_names),
        "label_names": _strings(label_names),
        "feature_names": _strings(feature_names),
        "circuit_names": _circuit_names(circuit_names, measured.cosines),
        "vocabulary": kind.vocabulary(items),
        "subnetworks": subnetworks,
        "items": items,
    }
    for k, row in enumerate(subnetworks):
        row["summary"] = " · ".join(p for p in (_summary(kind, data, row), notes[k] if notes else "") if p)
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    write_file(folder / DATA, lambda f: Path(f).write_text(text, encoding="utf-8"))
    kind.save(folder, [int(item) for item in items])
    return folder


def _measure(kind: InputKind, decomposition: Decomposition, impact: Tensor, n_top: int, history: History | None,
             labels: Tensor | None, ignore_label: int | None, circuits: dict[str, Tensor] | None) -> _Measured:
    """Check the impact matrix and the labels against the inputs, and measure what every row reads."""
    impact = impact.detach().float().cpu()
    N, C = kind.n_items * kind.length, decomposition.n_subnetworks
    if tuple(impact.shape) != (N, C):
        raise ValueError(f"impact must be (samples, subnetworks) = ({N}, {C}), got {tuple(impact.shape)}")
    if labels is not None:
        labels = labels.detach().cpu().reshape(-1).long()
        if labels.shape[0] != N:
            raise ValueError(f"labels must give one label per sample ({N}), got {labels.shape[0]}")
    top = top_samples(impact, n_top)                                            # (C, n_top)
    active = batch_top_k(impact, decomposition.top_k).float()                   # (N, C)
    p_here = active.mean(0)
    return _Measured(
        impact=impact, top=top, p_act=torch.tensor(history.p_act[-1]) if history is not None else p_here,
        p_here=p_here, together=active.T @ active, labels=labels,
        label_purity=label_purity(top, labels, ignore_label) if labels is not None else None,
        cosines=circuit_cosines(decomposition, circuits) if circuits else None)


def _subnetwork(k: int, kind: InputKind, measured: _Measured, probe: _Probe) -> dict:
    """Subnetwork k's row: impact statistics, top samples, the outputs d_k moves, the subnetworks active with it,
    what its kind of input adds, its label and its |cos| to the circuits."""
    top, values = measured.top[k], measured.impact[:, k]
    high = float(values.max())
    row = {
        "p_act": round_value(measured.p_act[k], 5),
        "active_here": round_value(measured.p_here[k], 5),
        "mean_impact": round_value(values.mean()),
        "max_impact": round_value(high),
        "dead": bool(measured.p_act[k] == 0),
        "top": [int(s) for s in top],
        "top_impact": round_values(measured.impact[top, k]),
        "histogram": {"max": round_value(high),
                      "counts": torch.histc(values, HISTOGRAM_BINS, 0, max(high, 1e-30)).long().tolist()},
        **_effects(k, kind, top, probe),
        "coactive": [[other, round_value(p), round_value(lift)]
                     for other, p, lift in coactive(measured.together, measured.p_here, k, N_COACTIVE)],
        **kind.row(measured.impact, k, top),
    }
    if measured.label_purity is not None:
        share, label = measured.label_purity
        row["label"], row["label_purity"] = int(label[k]), round_value(share[k], 3)
    if measured.cosines is not None:
        row["circuits"] = round_values(measured.cosines[k], 4)
    return row


def _effects(k: int, kind: InputKind, top: Tensor, probe: _Probe) -> dict:
    """The outputs d_k raises and lowers most at δ = 0, and the sweep: the mean output change of every output
    (or of the most moved ones, beyond SHOWN_OUTPUTS outputs) and the mean divergence, per δ."""
    x, forward = kind.probe(probe.collector.forward, top)
    up, down, change, spread = output_effects(probe.collector.model, forward, probe.decomposition, k, x, probe.deltas,
                                              probe.n_outputs, probe.collector.divergence)
    shown = list(range(change.shape[1])) if change.shape[1] <= SHOWN_OUTPUTS else [j for j, _ in up + down]
    return {"raised": [[j, round_value(v)] for j, v in up],
            "lowered": [[j, round_value(v)] for j, v in down],
            "sweep": {"outputs": shown, "change": round_values(change[:, shown]), "divergence": round_values(spread)}}


def _items(kind: InputKind, measured: _Measured, subnetworks: list[dict]) -> dict[str, dict]:
    """An entry per input that is some subnetwork's top sample, by index: the subnetworks of largest impact on
    each of its samples (per token for texts), its labels, and what its kind adds."""
    L = kind.length
    per = min(kind.listed, measured.impact.shape[1])
    items = {}
    for item in sorted({int(s) // L for row in subnetworks for s in row["top"]}):
        best = measured.impact[item * L:(item + 1) * L].topk(per, dim=1)                  # (positions, per)
        entry = {"top": [[[int(k), round_value(v, 3)] for k, v in zip(i.tolist(), value.tolist(), strict=True)]
                         for i, value in zip(best.indices, best.values, strict=True)]}
        if measured.labels is not None:
            entry["labels"] = measured.labels[item * L:(item + 1) * L].tolist()
        items[str(item)] = entry | kind.item(item)
    return items


def _header(title: str, kind: InputKind, measured: _Measured, probe: _Probe, history: History | None) -> dict:
    """The page's heading data: the setting, the decomposed tensors, the sweep's δ and the training history."""
    decomposition = probe.decomposition
    return {
        "format": FORMAT,
        "title": title,
        "kind": kind.name,
        "n_subnetworks": decomposition.n_subnetworks,
        "n_items": kind.n_items,
        "length": kind.length,
        "n_samples": measured.impact.shape[0],
        "n_top": measured.top.shape[1],
        "top_k": decomposition.top_k,
        "divergence": probe.collector.divergence,
        "p_act_from": "training" if history is not None else "inputs",
        "tensors": {n: list(s) for n, s in decomposition.shapes.items()},
        "ranks": {n: list(r) for n, r in decomposition.ranks.items()},
        "deltas": round_values(probe.deltas),
        "history": _history(history),
    }


def _history(history: History | None) -> dict | None:
    """The training history as plain data: error, learning rate and dead subnetworks per epoch."""
    if history is None:
        return None
    return {
        "reconstruction_error": round_values(history.reconstruction_error, 5),
        "lr": round_values(history.lr, 4),
        "dead": [sum(p == 0 for p in epoch) for epoch in history.p_act],
        "dropped_energy": round_values(history.dropped_energy, 5),
    }


def _output_names(kind: InputKind, subnetworks: list[dict], output_names: Sequence[str] | None) -> dict[str, str]:
    """The name of every output some row shows (in a sweep, raised or lowered), by index."""
    shown = {j for row in subnetworks for j in row["sweep"]["outputs"]}
    shown |= {j for row in subnetworks for j, _ in row["raised"] + row["lowered"]}
    return {str(j): str(output_names[j]) if output_names is not None else kind.output_name(j) for j in sorted(shown)}


def _strings(names: Sequence[str] | None) -> list[str] | None:
    return list(map(str, names)) if names is not None else None


def _circuit_names(names: Sequence[str] | None, cosines: Tensor | None) -> list[str] | None:
    """The circuits' names, `circuit i` by default; None without circuits."""
    if names is not None:
        return _strings(names)
    return [f"circuit {i}" for i in range(cosines.shape[1])] if cosines is not None else None


def _summary(kind: InputKind, data: dict, row: dict) -> str:
    """One line for the index: what the top samples share, and what the subnetwork moves."""
    parts = [kind.summary(data, row)]
    if data["circuit_names"] is not None:
        best = max(range(len(row["circuits"])), key=lambda i: row["circuits"][i])
        parts.append(f"{data['circuit_names'][best]} |cos| {row['circuits'][best]:.2f}")
    if row["raised"]:
        parts.append("↑ " + ", ".join(data["output_names"][str(j)].strip() for j, _ in row["raised"][:3]))
    return " · ".join(p for p in parts if p)
