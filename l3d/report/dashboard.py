"""A browsable, self-contained HTML dashboard of a fitted decomposition: one page per decomposition.

Two steps, so that nothing computed is lost when the page changes:

    folder = collect(out_dir / "dashboard", decomposition, collector, inputs, history=history, ...)
    render(folder)                      # writes folder/index.html from the saved data
    python -m l3d.report.dashboard RUN_DIR     # re-renders from the saved data, no model needed

`collect` computes everything the page shows from the decomposition, the gradient collector (which
holds the model and its forward) and held-out inputs, and saves it as plain data: `data.json`, and for
image models `images.safetensors` with the shown images. `render` turns that into one HTML file with
its CSS, JavaScript, charts (inline SVG) and thumbnails (base64 PNG) inside: no server, no network.

The page has an index of all subnetworks (P_act, mean impact, dead or live, a one-line summary;
columns sort on click), the training history, and a page per subnetwork (address `index.html#s/K`):
impact histogram, the top samples by impact (texts with every token shaded by the impact on
predicting it, images, or input vectors), the outputs its decoder direction raises and lowers most
(∂f/∂δ at δ = 0), an intervention sweep, the subnetworks it is most often active with, and for toys
the |cos| to each ground-truth circuit. Each sample links to a page of its own (`#x/ID`: the text,
image or vector with the subnetworks of largest impact on it).
"""
from __future__ import annotations

import argparse
import base64
import json
import math
import os
import re
import struct
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ..runtime.atomic import write_file
from ..decomposition import Decomposition, batch_top_k
from ..divergences import divergence
from ..gradients import GradientCollector, evaluating
from ..impacts import impact as sample_impact
from ..impacts import top_samples
from ..interventions import intervene, output_derivative
from ..experiments.subnetworks import purity
from ..train import History

DATA = "data.json"
IMAGES = "images.safetensors"
INDEX = "index.html"
FORMAT = 1
HISTOGRAM_BINS = 30
SHOWN_OUTPUTS = 12        # outputs up to this many are all drawn in the sweep; else the most moved ones
ITEM_SUBNETWORKS = 5      # subnetworks listed per image / vector on its sample page
TOKEN_SUBNETWORKS = 3     # subnetworks listed per token on a text's sample page
N_COACTIVE = 6


def feature_circuits(model: nn.Module, axes: dict[str, int]) -> dict[str, Tensor]:
    """Ground-truth circuit directions of a toy whose features index one axis of each named tensor.

    Circuit i is the model's own weights with only slice i along `axes[name]` kept in every tensor, e.g. for
    TMS feature i's embedding column W_in[:, i], its output row W_out[i] and bias b[i]:
    `feature_circuits(toy, {"W_in": 1, "W_out": 0, "b": 0})`. Returns name -> (n_features, *shape), the layout
    of `Decomposition.decoder_directions()`, for `collect(circuits=...)`.
    """
    params = dict(model.named_parameters())
    unknown = sorted(set(axes) - set(params))
    if unknown:
        raise ValueError(f"tensors {unknown} are not parameters of the model ({sorted(params)})")
    sizes = {params[n].shape[a] for n, a in axes.items()}
    if len(sizes) != 1:
        raise ValueError(f"the feature axes have different sizes {sorted(sizes)}: {axes}")
    (n,) = sizes
    out = {}
    for name, axis in axes.items():
        w = params[name].detach()
        keep = torch.eye(n, dtype=w.dtype, device=w.device)                 # (n, n): row i keeps slice i
        shape = [n] + [1] * w.dim()
        shape[axis + 1] = n
        out[name] = w.unsqueeze(0) * keep.view(shape)
    return out


def _round(value: float, digits: int = 4) -> float | None:
    """A float with `digits` significant digits (smaller JSON); NaN and inf become None."""
    value = float(value)
    return float(f"{value:.{digits}g}") if math.isfinite(value) else None


def _rounded(values: Tensor | Sequence[float], digits: int = 4) -> list:
    """Nested lists of rounded floats."""
    values = values.tolist() if isinstance(values, Tensor) else values
    return [_rounded(v, digits) if isinstance(v, list) else _round(v, digits) for v in values]


def _token_strings(ids: Sequence[int], decode: Callable[[list[int]], str], example: Sequence[int]) -> dict[int, str]:
    """Each token id's text, ending in the separator the tokenizer puts between tokens.

    A word-level tokenizer joins tokens with spaces (decode([a, b]) = "a b"), a subword one does not; the
    separator is read off `example`, two tokens of a real text.
    """
    a, b = int(example[0]), int(example[1])
    sep = " " if decode([a, b]) == decode([a]) + " " + decode([b]) else ""
    return {int(i): decode([int(i)]) + sep for i in ids}


def _history(history: History | None) -> dict | None:
    """The training history as plain data: error, learning rate and dead subnetworks per epoch."""
    if history is None:
        return None
    return {
        "reconstruction_error": _rounded(history.reconstruction_error, 5),
        "lr": _rounded(history.lr, 4),
        "dead": [sum(p == 0 for p in epoch) for epoch in history.p_act],
        "dropped_energy": _rounded(history.dropped_energy, 5),
    }


def _circuit_cosines(decomposition: Decomposition, circuits: dict[str, Tensor]) -> Tensor:
    """|cos| between every decoder direction and every circuit direction, over the circuits' tensors: (C, M)."""
    unknown = sorted(set(circuits) - set(decomposition.names))
    if unknown:
        raise ValueError(f"circuit tensors {unknown} are not decomposed ({decomposition.names})")
    decoder = decomposition.decoder_directions()
    d = torch.cat([decoder[n].detach().flatten(1).double().cpu() for n in circuits], dim=1)
    g = torch.cat([c.detach().flatten(1).double().cpu() for c in circuits.values()], dim=1)
    if g.shape[1] != d.shape[1]:
        raise ValueError("circuit directions must have the decomposed tensors' shapes, name -> (n_circuits, *shape)")
    norms = d.norm(dim=1, keepdim=True) * g.norm(dim=1)
    return ((d @ g.T).abs() / norms.clamp_min(1e-30)).float()


def _to_uint8(images: Tensor) -> Tensor:
    """Images (n, channels, H, W) as uint8; values outside [0, 1] are scaled per image to its min and max."""
    x = images.detach().float().cpu()
    if x.min() < 0 or x.max() > 1:
        lo = x.flatten(1).min(1).values.view(-1, 1, 1, 1)
        hi = x.flatten(1).max(1).values.view(-1, 1, 1, 1)
        x = (x - lo) / (hi - lo).clamp_min(1e-12)
    return (x * 255).round().clamp(0, 255).to(torch.uint8)


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
        samples and its share (`l3d.subnetworks.purity`; a subnetwork whose top samples all carry
        `ignore_label`, e.g. the corpus's `none`, gets no label).
    output_names: a name per model output (class names, vocabulary); sequences default to decoded tokens.
    feature_names: a name per input feature, for vector inputs.
    circuits: toys, ground-truth circuit directions, name -> (M, *shape) over some decomposed tensors (e.g.
        `feature_circuits`), with `circuit_names`; the page shows each subnetwork's |cos| to each.

    "Active" for co-activation: BatchTopK with the decomposition's top_k applied to the impact matrix of all of
    `inputs` at once. Returns `folder`.
    """
    folder = Path(folder)
    model, forward = collector.model, collector.forward
    sequence = collector.sequence
    kind = "texts" if sequence else "images" if inputs.dim() == 4 else "vectors" if inputs.dim() == 2 else None
    if kind is None:
        raise ValueError(f"inputs must be vectors (N, F), images (N, C, H, W) or token ids, got shape {tuple(inputs.shape)}")
    if sequence and decode is None:
        raise ValueError("a sequence model's dashboard needs decode (ids -> text) to show its texts")
    if isinstance(history, dict):
        history = History.from_dict(history)
    if impact is None:
        impact = sample_impact(decomposition, collector, inputs, n_ref=n_ref, seed=seed)
    impact = impact.detach().float().cpu()
    n_items, length = (inputs.shape[0], inputs.shape[1]) if sequence else (inputs.shape[0], 1)
    N, C = impact.shape
    if N != n_items * length or C != decomposition.n_subnetworks:
        raise ValueError(f"impact must be (samples, subnetworks) = ({n_items * length}, {decomposition.n_subnetworks}), "
                         f"got {tuple(impact.shape)}")
    top = top_samples(impact, n_top)                                            # (C, n)
    active = batch_top_k(impact, decomposition.top_k).float()                   # (N, C)
    p_here = active.mean(0)
    p_act = torch.tensor(history.p_act[-1]) if history is not None else p_here
    together = active.T @ active                                                # (C, C)
    if labels is not None:
        labels = labels.detach().cpu().reshape(-1).long()
        if labels.shape[0] != N:
            raise ValueError(f"labels must give one label per sample ({N}), got {labels.shape[0]}")
        pure, label = purity(top, labels, ignore_label)
    cosines = _circuit_cosines(decomposition, circuits) if circuits else None
    deltas = torch.linspace(-1, 1, 9) if deltas is None else torch.as_tensor(deltas, dtype=torch.float32).cpu()
    texts = (tokens if tokens is not None else inputs).detach().cpu() if sequence else None
    names: dict[int, str] = {}

    def output_name(j: int) -> str:
        if output_names is not None:
            return str(output_names[j])
        return decode([j]) if sequence else f"y{j}"

    subnetworks = []
    for k in range(C):
        samples = top[k]
        if sequence:
            shown_items, positions = samples // length, samples % length
            rows = torch.arange(len(samples), device=inputs.device)
            at = positions.to(inputs.device)

            def chosen(m: nn.Module, x: Tensor, at: Tensor = at, rows: Tensor = rows) -> Tensor:
                return forward(m, x)[rows, at]                                  # each text's output at its position
        else:
            shown_items, chosen = samples, forward
        up, down, change, spread = _output_effects(model, chosen, decomposition, k, inputs[shown_items.to(inputs.device)],
                                                   deltas, n_outputs, collector.divergence)
        shown = list(range(change.shape[1])) if change.shape[1] <= SHOWN_OUTPUTS else [j for j, _ in up + down]
        for j in set(shown) | {j for j, _ in up + down}:
            names.setdefault(j, output_name(j))
        values = impact[:, k]
        row = {
            "p_act": _round(p_act[k], 5),
            "active_here": _round(p_here[k], 5),
            "mean_impact": _round(values.mean()),
            "max_impact": _round(values.max()),
            "dead": bool(p_act[k] == 0),
            "top": [int(s) for s in samples],
            "top_impact": _rounded(impact[samples, k]),
            "histogram": {"max": _round(values.max()),
                          "counts": torch.histc(values, HISTOGRAM_BINS, 0, max(float(values.max()), 1e-30)).long().tolist()},
            "raised": [[j, _round(v)] for j, v in up],
            "lowered": [[j, _round(v)] for j, v in down],
            "sweep": {"outputs": shown, "change": _rounded(change[:, shown]), "divergence": _rounded(spread)},
        }
        others = together[k] / together[k, k].clamp_min(1)
        others[k] = -1
        order = others.argsort(descending=True)[:N_COACTIVE]
        row["coactive"] = [[int(l), _round(others[l]), _round(others[l] / p_here[l].clamp_min(1e-12))]
                           for l in order if others[l] > 0]
        if sequence:
            row["token_impact"] = [_rounded(impact[t * length:(t + 1) * length, k], 3) for t in shown_items.tolist()]
        if labels is not None:
            row["label"], row["purity"] = int(label[k]), _round(pure[k], 3)
        if cosines is not None:
            row["circuits"] = _rounded(cosines[k], 4)
        subnetworks.append(row)

    used = sorted({int(s) // length for row in subnetworks for s in row["top"]})
    items: dict[str, dict] = {}
    for item in used:
        block = impact[item * length:(item + 1) * length]                     # (positions, C)
        per = TOKEN_SUBNETWORKS if sequence else ITEM_SUBNETWORKS
        best = block.topk(min(per, C), dim=1)
        entry = {"top": [[[int(k), _round(v, 3)] for k, v in zip(i.tolist(), val.tolist())]
                         for i, val in zip(best.indices, best.values)]}
        if labels is not None:
            entry["labels"] = labels[item * length:(item + 1) * length].tolist()
        if kind == "vectors":
            entry["x"] = _rounded(inputs[item].detach().cpu(), 3)
        if sequence:
            entry["ids"] = texts[item].tolist()
        items[str(item)] = entry
    vocabulary = None
    if sequence:
        ids = sorted({i for e in items.values() for i in e["ids"]})
        strings = _token_strings(ids, decode, texts[0, :2].tolist())
        vocabulary = {str(i): s for i, s in strings.items()}
    data = {
        "format": FORMAT,
        "title": title,
        "kind": kind,
        "n_subnetworks": C,
        "n_items": n_items,
        "length": length,
        "n_samples": N,
        "n_top": top.shape[1],
        "top_k": decomposition.top_k,
        "divergence": collector.divergence,
        "p_act_from": "training" if history is not None else "inputs",
        "tensors": {n: list(s) for n, s in decomposition.shapes.items()},
        "ranks": {n: list(r) for n, r in decomposition.ranks.items()},
        "deltas": _rounded(deltas),
        "history": _history(history),
        "output_names": {str(j): s for j, s in sorted(names.items())},
        "label_names": list(map(str, label_names)) if label_names is not None else None,
        "feature_names": list(map(str, feature_names)) if feature_names is not None else None,
        "circuit_names": (list(map(str, circuit_names)) if circuit_names is not None
                          else [f"circuit {i}" for i in range(cosines.shape[1])] if cosines is not None else None),
        "vocabulary": vocabulary,
        "subnetworks": subnetworks,
        "items": items,
    }
    for row in subnetworks:
        row["summary"] = _summary(data, row)
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    write_file(folder / DATA, lambda f: Path(f).write_text(text, encoding="utf-8"))
    if kind == "images":
        from safetensors.torch import save_file

        pixels = {"images": _to_uint8(inputs[torch.tensor(used, device=inputs.device)]).contiguous(),
                  "ids": torch.tensor(used, dtype=torch.int64)}
        write_file(folder / IMAGES, lambda f: save_file(pixels, f))
    return folder


def _output_effects(
    model: nn.Module,
    forward: Callable[[nn.Module, Tensor], Tensor],
    decomposition: Decomposition,
    k: int,
    x: Tensor,
    deltas: Tensor,
    n_outputs: int,
    divergence_kind: str,
) -> tuple[list[tuple[int, float]], list[tuple[int, float]], Tensor, Tensor]:
    """What moving along d_k does to the outputs `forward` gives for the samples x (one output row per sample).

    Returns the n_outputs outputs with the largest and with the most negative mean ∂f/∂δ at δ = 0 (one JVP),
    as (output, derivative) pairs of that sign, and for every δ of the sweep the mean output change
    f(W0 + δ d_k) − f(W0) (len(deltas), n_out) and the mean divergence of f(W0 + δ d_k) from f(W0) (len(deltas),).
    """
    slope = output_derivative(model, decomposition, k, x, forward=forward).float().mean(0).cpu()   # (out,)
    n = min(n_outputs, slope.shape[0])
    up = [(int(j), float(slope[j])) for j in slope.topk(n).indices if slope[j] > 0]
    down = [(int(j), float(slope[j])) for j in (-slope).topk(n).indices if slope[j] < 0]
    with torch.no_grad(), evaluating(model):
        base = forward(model, x).float()
        moved = intervene(model, decomposition, k, deltas, x, forward=forward).float()           # (D, n, out)
        spread = divergence(moved, base.expand_as(moved), divergence_kind).mean(1).cpu()
        change = (moved - base).mean(1).cpu()                                                   # (D, out)
    return up, down, change, spread


def _summary(data: dict, row: dict) -> str:
    """One line for the index: what the top samples share, and what the subnetwork moves."""
    parts = []
    names = data["output_names"]
    if data["kind"] == "texts":
        length, vocabulary = data["length"], data["vocabulary"]
        targets = []
        for s in row["top"]:
            ids = data["items"][str(s // length)]["ids"]
            if s % length + 1 < len(ids):
                targets.append(vocabulary[str(ids[s % length + 1])].strip())
        parts.append("→ " + " ".join(f"‘{t}’×{c}" for t, c in Counter(targets).most_common(3)))
    if data["kind"] == "vectors":
        x = torch.tensor([data["items"][str(s)]["x"] for s in row["top"]], dtype=torch.float32).abs().mean(0)
        features = data["feature_names"] or [f"x{i}" for i in range(len(x))]
        parts.append("inputs " + ", ".join(features[i] for i in x.argsort(descending=True)[:2].tolist() if x[i] > 0))
    if data["circuit_names"] is not None:
        best = max(range(len(row["circuits"])), key=lambda i: row["circuits"][i])
        parts.append(f"{data['circuit_names'][best]} |cos| {row['circuits'][best]:.2f}")
    if row["raised"]:
        parts.append("↑ " + ", ".join(names[str(j)].strip() for j, _ in row["raised"][:3]))
    return " · ".join(p for p in parts if p)


_KEYS = ("format", "title", "kind", "n_subnetworks", "n_items", "length", "n_samples", "n_top", "top_k", "divergence",
         "p_act_from", "tensors", "ranks", "deltas", "history", "output_names", "label_names", "feature_names",
         "circuit_names", "vocabulary", "subnetworks", "items")   # every key collect writes


def load(folder: str | os.PathLike) -> dict:
    """The data `collect` saved in `folder` (or in `folder`/dashboard); a ValueError naming the file when it is not
    JSON, not of this format or lacks any of collect's keys (a damaged file)."""
    folder = _data_folder(Path(folder))
    path = folder / DATA
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is damaged: not valid JSON ({type(e).__name__}: {e}); run collect again") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else f"a JSON {type(data).__name__}"
        raise ValueError(f"{path} has format {found}, this l3d reads format {FORMAT}")
    missing = [k for k in _KEYS if k not in data]
    if missing:
        raise ValueError(f"{path} is damaged: it lacks {', '.join(missing)}; run collect again")
    return data


def _data_folder(folder: Path) -> Path:
    """`folder` if it holds data.json, else `folder`/dashboard if that does."""
    if (folder / DATA).exists():
        return folder
    if (folder / "dashboard" / DATA).exists():
        return folder / "dashboard"
    raise FileNotFoundError(f"no {DATA} in {folder} or {folder / 'dashboard'}: run l3d.report.dashboard.collect first")


def png(pixels: Tensor) -> bytes:
    """A PNG file of a uint8 image (channels, H, W) with 1 (grey) or 3 (RGB) channels."""
    channels, height, width = pixels.shape
    if channels not in (1, 3):
        raise ValueError(f"a PNG thumbnail needs 1 or 3 channels, got {channels}")
    rows = pixels.permute(1, 2, 0).contiguous().numpy().reshape(height, width * channels)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0 if channels == 1 else 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def render(folder: str | os.PathLike) -> Path:
    """Write `folder`/index.html, the self-contained dashboard, from the data `collect` saved; returns its path."""
    folder = _data_folder(Path(folder))
    data = load(folder)
    if data["kind"] == "images":
        from safetensors.torch import load_file

        saved = load_file(folder / IMAGES)
        data["images"] = {str(int(i)): "data:image/png;base64," + base64.b64encode(png(image)).decode()
                          for i, image in zip(saved["ids"], saved["images"])}
    # "<" only occurs inside JSON strings; escaped, no "</script>" or "<!--" in the data can end the script element
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace("<", "\\u003c")
    title = data["title"].replace("&", "&amp;").replace("<", "&lt;")
    parts = {"title": title, "css": _CSS, "js": _JS, "data": payload}
    # one pass: a {{...}} inside the title or the data is text, never a place to fill
    page = re.sub(r"\{\{(title|css|js|data)\}\}", lambda m: parts[m.group(1)], _PAGE)
    return write_file(folder / INDEX, lambda f: Path(f).write_text(page, encoding="utf-8"))


def main(argv: Sequence[str] | None = None) -> Path:
    """Command line: re-render RUN_DIR's dashboard from its saved data."""
    parser = argparse.ArgumentParser(prog="python -m l3d.report.dashboard", description=main.__doc__)
    parser.add_argument("run_dir", help="a dashboard folder (holding data.json), or a folder whose dashboard/ holds it")
    run_dir = parser.parse_args(argv).run_dir
    from safetensors import SafetensorError

    try:
        path = render(run_dir)
    except (ValueError, OSError, SafetensorError) as e:   # missing or damaged saved data: one line, no traceback
        parser.exit(2, f"{parser.prog}: error: {' '.join(str(e).split())}\n")
    print(path)
    return path


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{{title}}</title>
<style>{{css}}</style></head>
<body><main id="app"></main>
<script type="application/json" id="data">{{data}}</script>
<script>{{js}}</script>
</body></html>
"""

_CSS = r"""
:root { --fg:#1d2430; --muted:#667085; --line:#e3e6ea; --bg:#fff; --card:#f8f9fb; --accent:#2458a6;
        --imp:230,85,13; --pos:33,102,172; --neg:203,24,29; }
* { box-sizing: border-box; }
body { margin: 0; font: 13px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color: var(--fg); background: var(--bg); }
main { max-width: 1280px; margin: 0 auto; padding: 14px 20px 40px; }
a { color: var(--accent); text-decoration: none; } a:hover { text-decoration: underline; }
h1 { font-size: 19px; margin: 4px 0 2px; } h2 { font-size: 14px; margin: 18px 0 6px; }
.muted { color: var(--muted); } .num { font-variant-numeric: tabular-nums; text-align: right; white-space: nowrap; }
.meta { color: var(--muted); margin-bottom: 10px; } .meta b { color: var(--fg); font-weight: 600; }
nav { display: flex; gap: 14px; align-items: baseline; margin-bottom: 4px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 10px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; min-width: 0; }
.card h3 { font-size: 12px; margin: 0 0 4px; font-weight: 600; } .card .note { color: var(--muted); font-size: 11px; margin-top: 2px; }
svg text { font-size: 10px; fill: #555; } svg .axis { stroke: #999; } svg .grid { stroke: #eee; }
table { border-collapse: collapse; width: 100%; }
th, td { padding: 3px 6px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { text-align: left; font-weight: 600; background: #f1f3f6; position: sticky; top: 0; }
table.index th { cursor: pointer; user-select: none; white-space: nowrap; }
table.index th[aria-sort="ascending"]::after { content: " ▲"; font-size: 9px; }
table.index th[aria-sort="descending"]::after { content: " ▼"; font-size: 9px; }
table.index tr:hover td { background: #f6f8fc; }
td.summary { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; max-width: 560px; }
table.coactive { table-layout: fixed; } table.coactive td.summary { max-width: none; font-size: 11px; }
.bar { position: relative; } .bar i { position: absolute; left: 0; top: 3px; bottom: 3px; background: rgba(36,88,166,.13); border-radius: 2px; }
.bar span { position: relative; }
.badge { display: inline-block; padding: 0 6px; border-radius: 8px; font-size: 11px; font-weight: 600; }
.live { background: #e3f4e8; color: #1a7f37; } .dead { background: #fde8e8; color: #b42318; }
.controls { display: flex; gap: 16px; align-items: center; margin: 12px 0 6px; }
.controls input[type=search] { width: 280px; padding: 3px 6px; border: 1px solid #ccd; border-radius: 4px; font: inherit; }
.stats { display: flex; flex-wrap: wrap; gap: 6px 18px; margin: 4px 0 10px; } .stats b { font-variant-numeric: tabular-nums; }
.outputs td { padding: 1px 4px; border: 0; } .outputs .name { font-family: ui-monospace, "DejaVu Sans Mono", monospace; white-space: pre; }
.legend { display: flex; flex-wrap: wrap; gap: 2px 10px; font-size: 11px; color: var(--muted); }
.legend i { display: inline-block; width: 10px; height: 3px; margin-right: 3px; vertical-align: middle; }
.sample { display: flex; gap: 8px; align-items: baseline; padding: 3px 0; border-bottom: 1px solid var(--line); }
.sample .rank { width: 22px; color: var(--muted); text-align: right; flex: none; }
.sample .val { width: 58px; flex: none; } .sample .id { width: 112px; flex: none; font-size: 11px; }
.sample .tag { font-size: 11px; color: var(--muted); flex: none; }
.tokens { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12.5px; line-height: 1.8; flex: 1; white-space: pre-wrap; }
.tok { white-space: pre; border-radius: 2px; padding: 1px 0; }
.tok.target { outline: 2px solid #111; outline-offset: 0; font-weight: 700; }
.tok.first { color: var(--muted); }
.images { display: flex; flex-wrap: wrap; gap: 8px; }
.images figure { margin: 0; text-align: center; font-size: 11px; }
.images img, .big img { image-rendering: pixelated; width: 72px; height: 72px; display: block; border: 1px solid var(--line); background: #000; }
.big img { width: 192px; height: 192px; }
table.vec { width: auto; }
.vec td.cell { text-align: center; font-variant-numeric: tabular-nums; font-size: 11px; min-width: 34px; }
.subs a { margin-right: 8px; white-space: nowrap; }
"""

_JS = r"""
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const S = D.subnetworks;
const app = document.getElementById("app");
const esc = s => String(s).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
function fmt(v, digits = 3) {
  if (v === null || v === undefined) return "–";
  if (v === 0) return "0";
  const a = Math.abs(v);
  return (a >= 1e4 || a < 1e-3) ? v.toExponential(2) : v.toPrecision(digits);
}
const tick = v => (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(0) : String(+v.toPrecision(4));
const pct = v => (100 * v).toFixed(v >= 0.1 ? 0 : 1) + "%";
const outName = j => D.output_names[String(j)];
const subLink = k => `<a href="#s/${k}">#${k}</a>`;
const itemName = i => D.kind === "texts" ? "text " + i : D.kind === "images" ? "image " + i : "sample " + i;
const PALETTE = ["#2458a6", "#d9480f", "#2b8a3e", "#862e9c", "#c92a2a", "#1098ad", "#e67700", "#5c940d", "#a61e4d", "#364fc7", "#495057", "#0b7285"];

// --- charts (inline SVG) ---------------------------------------------------------------------------
function ticks(lo, hi, n = 4, integer = false) {
  if (!(hi > lo)) return [lo];
  const step0 = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(step0)));
  const step = Math.max(integer ? 1 : 0, [1, 2, 2.5, 5, 10].map(m => m * mag).find(s => s >= step0));
  const out = [];
  for (let t = Math.ceil(lo / step - 1e-9) * step; t <= hi + 1e-9 * step; t += step) out.push(+t.toPrecision(12));
  return out;
}
function frame(w, h, m, xs, ys, xlabel, ylabel, yticks = null, yfmt = tick, xint = false) {
  const [x0, x1] = xs, [y0, y1] = ys;
  const X = v => m.l + (x1 > x0 ? (v - x0) / (x1 - x0) : 0.5) * (w - m.l - m.r);
  const Y = v => h - m.b - (y1 > y0 ? (v - y0) / (y1 - y0) : 0.5) * (h - m.t - m.b);
  let g = "";
  for (const t of yticks || ticks(y0, y1)) g += `<line class="grid" x1="${m.l}" x2="${w - m.r}" y1="${Y(t)}" y2="${Y(t)}"/><text x="${m.l - 4}" y="${Y(t) + 3}" text-anchor="end">${yfmt(t)}</text>`;
  for (const t of ticks(x0, x1, 5, xint)) g += `<line class="axis" x1="${X(t)}" x2="${X(t)}" y1="${h - m.b}" y2="${h - m.b + 3}"/><text x="${X(t)}" y="${h - m.b + 13}" text-anchor="middle">${tick(t)}</text>`;
  g += `<line class="axis" x1="${m.l}" x2="${w - m.r}" y1="${h - m.b}" y2="${h - m.b}"/><line class="axis" x1="${m.l}" x2="${m.l}" y1="${m.t}" y2="${h - m.b}"/>`;
  g += `<text x="${(m.l + w - m.r) / 2}" y="${h - 3}" text-anchor="middle">${esc(xlabel)}</text>`;
  g += `<text transform="translate(10 ${(m.t + h - m.b) / 2}) rotate(-90)" text-anchor="middle">${esc(ylabel)}</text>`;
  return {X, Y, g};
}
function lineChart(xs, series, xlabel, ylabel, opts = {}) {
  const w = opts.w || 290, h = opts.h || 170, m = {l: 50, r: 8, t: 8, b: 30};
  const all = series.flatMap(s => s.ys).filter(v => v !== null);
  let lo = Math.min(...all, opts.zero ? 0 : Infinity), hi = Math.max(...all, opts.zero ? 0 : -Infinity);
  if (!(hi > lo)) hi = lo + 1;
  const pad = 0.04 * (hi - lo);
  const {X, Y, g} = frame(w, h, m, [Math.min(...xs), Math.max(...xs)], [lo - pad, hi + pad], xlabel, ylabel, opts.yint ? ticks(lo - pad, hi + pad, 4, true) : null, tick, opts.integer);
  let body = g;
  if (opts.zero) body += `<line class="axis" stroke-dasharray="2 2" x1="${m.l}" x2="${w - m.r}" y1="${Y(0)}" y2="${Y(0)}"/>`;
  for (const s of series) {
    const pts = s.ys.map((v, i) => v === null ? null : `${X(xs[i]).toFixed(1)},${Y(v).toFixed(1)}`).filter(p => p);
    body += `<polyline fill="none" stroke="${s.color}" stroke-width="${s.width || 1.6}" points="${pts.join(" ")}"><title>${esc(s.name)}</title></polyline>`;
    if (xs.length <= 40) body += pts.map(p => `<circle cx="${p.split(",")[0]}" cy="${p.split(",")[1]}" r="1.8" fill="${s.color}"/>`).join("");
  }
  const legend = series.length > 1 ? `<div class="legend">${series.map(s => `<span><i style="background:${s.color}"></i>${esc(s.name)}</span>`).join("")}</div>` : "";
  return `<svg viewBox="0 0 ${w} ${h}" width="100%" role="img">${body}</svg>${legend}`;
}
function histogram(counts, lo, hi, xlabel, ylabel, opts = {}) {
  const w = opts.w || 290, h = opts.h || 150, m = {l: 42, r: 8, t: 8, b: 30};
  // y: log10(1 + count), ticks at 0, 1, 10, 100, ...
  const ymax = Math.max(...counts.map(c => Math.log10(1 + c)), Math.log10(2));
  const yt = ymax < 1.5 ? [0] : []; for (let c = 1; Math.log10(1 + c) <= ymax + 1e-9; c *= 10) yt.push(Math.log10(1 + c));
  const {X, Y, g} = frame(w, h, m, [lo, hi], [0, ymax], xlabel, ylabel, yt, t => String(Math.round(Math.pow(10, t) - 1)));
  const step = (hi - lo) / counts.length;
  let body = g;
  counts.forEach((c, i) => {
    if (!c) return;
    const x = X(lo + i * step), x2 = X(lo + (i + 1) * step), y = Y(Math.log10(1 + c));
    body += `<rect x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${Math.max(x2 - x - 0.5, 0.5).toFixed(1)}" height="${(h - m.b - y).toFixed(1)}" fill="${opts.color || "#5b7fbd"}"><title>${fmt(lo + i * step)}–${fmt(lo + (i + 1) * step)}: ${c}</title></rect>`;
  });
  if (opts.marker !== undefined) body += `<line x1="${X(opts.marker)}" x2="${X(opts.marker)}" y1="${m.t}" y2="${h - m.b}" stroke="#d9480f" stroke-dasharray="3 2"><title>${esc(opts.markerLabel || "")}</title></line>`;
  return `<svg viewBox="0 0 ${w} ${h}" width="100%" role="img">${body}</svg>`;
}
function bins(values, n, lo, hi) {
  const counts = new Array(n).fill(0);
  for (const v of values) counts[Math.min(n - 1, Math.max(0, Math.floor((v - lo) / ((hi - lo) || 1) * n)))]++;
  return counts;
}

// --- the index ---------------------------------------------------------------------------------
const columns = [
  {key: "k", label: "#", num: true, get: k => k, cell: k => subLink(k), title: "subnetwork"},
  {key: "p_act", label: "P_act", num: true, get: k => S[k].p_act, bar: "p_act",
   title: D.p_act_from === "training" ? "fraction of samples selecting the subnetwork in the last training epoch" : "fraction of the shown samples on which it is active"},
  {key: "mean_impact", label: "mean impact", num: true, get: k => S[k].mean_impact, bar: "mean_impact", title: "mean over the samples of I(x, v_k)"},
  {key: "max_impact", label: "max impact", num: true, get: k => S[k].max_impact, title: "largest impact on one sample"},
  {key: "status", label: "status", num: false, get: k => S[k].dead ? "dead" : "live", cell: k => S[k].dead ? '<span class="badge dead">dead</span>' : '<span class="badge live">live</span>'},
];
const labelOf = k => S[k].label >= 0 ? D.label_names[S[k].label] : "–";
if (D.label_names) columns.push({key: "purity", label: "top label", num: true, left: true, get: k => S[k].purity,
  cell: k => `${esc(labelOf(k))} <span class="muted">${pct(S[k].purity)}</span>`, title: "most common label of the top samples, and its share (sorts by the share)"});
if (D.circuit_names) columns.push({key: "circuit", label: "best circuit |cos|", num: true, get: k => Math.max(...S[k].circuits),
  cell: k => { const c = S[k].circuits, b = c.indexOf(Math.max(...c)); return `${fmt(c[b])} <span class="muted">${esc(D.circuit_names[b])}</span>`; }});
columns.push({key: "summary", label: "summary", num: false, get: k => S[k].summary, cell: k => esc(S[k].summary), cls: "summary",
  title: D.kind === "texts" ? "most common target tokens of the top samples · outputs raised most" : "what the top samples share · outputs raised most"});
const maxOf = {p_act: Math.max(...S.map(s => s.p_act)) || 1, mean_impact: Math.max(...S.map(s => s.mean_impact)) || 1};
const sort = {key: "k", dir: 1};

function indexRows() {
  const q = (document.getElementById("filter") || {}).value || "";
  const hideDead = (document.getElementById("hidedead") || {}).checked;
  const col = columns.find(c => c.key === sort.key);
  const text = k => (S[k].summary + (D.label_names ? " " + labelOf(k) : "")).toLowerCase();
  let ks = S.map((_, k) => k).filter(k => !(hideDead && S[k].dead) && (!q || text(k).includes(q.toLowerCase()) || String(k) === q));
  ks.sort((a, b) => { const x = col.get(a), y = col.get(b); return (x < y ? -1 : x > y ? 1 : 0) * sort.dir || a - b; });
  document.getElementById("rows").innerHTML = ks.map(k => `<tr data-k="${k}">` + columns.map(c => {
    let inner = c.cell ? c.cell(k) : fmt(c.get(k));
    if (c.bar) inner = `<div class="bar"><i style="width:${(100 * c.get(k) / maxOf[c.bar]).toFixed(1)}%"></i><span>${inner}</span></div>`;
    return `<td class="${c.num && !c.left ? "num" : ""} ${c.cls || ""}">${inner}</td>`;
  }).join("") + "</tr>").join("");
  document.getElementById("shown").textContent = `${ks.length} of ${S.length} subnetworks`;
  for (const th of document.querySelectorAll("table.index th")) th.setAttribute("aria-sort", th.dataset.key === sort.key ? (sort.dir > 0 ? "ascending" : "descending") : "none");
}
function historyCards() {
  const H = D.history, cards = [];
  if (H && H.reconstruction_error.length) {
    const xs = H.reconstruction_error.map((_, i) => i + 1);
    cards.push(`<div class="card"><h3>Reconstruction error per epoch</h3>${lineChart(xs, [{name: "reconstruction error", ys: H.reconstruction_error, color: PALETTE[0]}], "epoch", "error", {integer: true})}<div class="note">last epoch ${fmt(H.reconstruction_error.at(-1))}, lowest ${fmt(Math.min(...H.reconstruction_error))}</div></div>`);
    cards.push(`<div class="card"><h3>Dead subnetworks per epoch</h3>${lineChart(xs, [{name: "dead", ys: H.dead, color: PALETTE[4]}], "epoch", "dead subnetworks", {zero: true, integer: true, yint: true})}<div class="note">P_act = 0 in the epoch; last epoch ${H.dead.at(-1)} of ${S.length}</div></div>`);
  }
  const p = S.map(s => s.p_act), hi = Math.max(...p) || 1;
  cards.push(`<div class="card"><h3>P_act of the subnetworks</h3>${histogram(bins(p, 30, 0, hi), 0, hi, "P_act", "subnetworks")}<div class="note">${D.p_act_from === "training" ? "last training epoch" : "on the shown samples"}; y: log scale</div></div>`);
  return cards.join("");
}
function tensorList() {
  // the decomposed tensors with their shapes (hover: Tucker ranks), a prefix they share written once
  const names = Object.keys(D.tensors);
  let prefix = names.length > 1 ? names.reduce((a, b) => { let i = 0; while (i < a.length && a[i] === b[i]) i++; return a.slice(0, i); }) : "";
  prefix = prefix.slice(0, prefix.lastIndexOf(".") + 1);
  const list = names.map(n => `<span title="Tucker rank ${D.ranks[n].join("×")}">${esc(n.slice(prefix.length))} ${D.tensors[n].join("×")}</span>`).join(", ");
  return `tensors ${esc(prefix)}${prefix ? "{" : ""}${list}${prefix ? "}" : ""}`;
}
function indexPage() {
  const dead = S.filter(s => s.dead).length, H = D.history;
  app.innerHTML = `<h1>${esc(D.title)}</h1>
  <div class="meta"><b>${S.length}</b> subnetworks · <b>${S.length - dead}</b> live, <b>${dead}</b> dead ·
  ${H && H.reconstruction_error.length ? `reconstruction error <b>${fmt(H.reconstruction_error.at(-1))}</b> · ` : ""}
  top_k ${D.top_k} · impacts on <b>${D.n_samples}</b> held-out samples${D.kind === "texts" ? ` (${D.n_items} texts × ${D.length} positions)` : ""} ·
  ${D.divergence.toUpperCase()} divergence · ${tensorList()}</div>
  <div class="cards">${historyCards()}</div>
  <div class="controls"><input type="search" id="filter" placeholder="filter summaries and labels (e.g. a token or class)">
  <label><input type="checkbox" id="hidedead"> hide dead</label><span class="muted" id="shown"></span>
  <span class="muted">click a column header to sort</span></div>
  <table class="index"><thead><tr>${columns.map(c => `<th data-key="${c.key}" title="${esc(c.title || "")}" class="${c.num && !c.left ? "num" : ""}">${esc(c.label)}</th>`).join("")}</tr></thead><tbody id="rows"></tbody></table>`;
  for (const th of document.querySelectorAll("table.index th")) th.addEventListener("click", () => {
    const col = columns.find(c => c.key === th.dataset.key);
    sort.dir = sort.key === col.key ? -sort.dir : (col.num ? -1 : 1);
    sort.key = col.key;
    indexRows();
  });
  document.getElementById("filter").addEventListener("input", indexRows);
  document.getElementById("hidedead").addEventListener("change", indexRows);
  indexRows();
}

// --- samples -----------------------------------------------------------------------------------
function tokenSpans(item, alphas, target, tips) {
  // alphas[p], tips[p]: shade (0..1) and hover text of predicting token p + 1 (the sample at position p)
  const e = D.items[item];
  return e.ids.map((id, i) => {
    const a = i > 0 ? alphas[i - 1] : 0;
    const style = a > 0 ? `background:rgba(var(--imp),${Math.min(1, a).toFixed(3)})` : "";
    const label = i > 0 && e.labels ? ` · ${D.label_names[e.labels[i - 1]]}` : "";
    const tip = i === 0 ? "first token (never predicted)" : `predicted at position ${i - 1}: ${tips[i - 1]}${label}`;
    const [, lead, word, trail] = D.vocabulary[String(id)].replace(/\n/g, "↵").match(/^(\s*)(.*?)(\s*)$/s);
    const [before, core, after] = word ? [lead, word, trail] : ["", lead + trail, ""];
    return `${esc(before)}<span class="tok${i === target ? " target" : ""}${i === 0 ? " first" : ""}" style="${style}" title="${esc(tip)}">${esc(core)}</span>${esc(after)}`;
  }).join("");
}
function textSamples(k) {
  const s = S[k], scale = s.top_impact[0] || 1;
  return s.top.map((sample, r) => {
    const item = Math.floor(sample / D.length), pos = sample % D.length, values = s.token_impact[r];
    const e = D.items[item], tag = e.labels ? `<span class="tag">${esc(D.label_names[e.labels[pos]])}</span>` : "";
    return `<div class="sample"><span class="rank">${r + 1}</span><span class="val num">${fmt(s.top_impact[r])}</span>
      <a class="id" href="#x/${item}" title="the whole text and the subnetworks acting on each token">${itemName(item)} · pos ${pos}</a>
      <span class="tokens">${tokenSpans(item, values.map(v => v / scale), pos + 1, values.map(v => "impact " + fmt(v)))}</span>${tag}</div>`;
  }).join("");
}
function imageSamples(k) {
  const s = S[k];
  return `<div class="images">${s.top.map((item, r) => {
    const label = D.items[item].labels ? `<b>${esc(D.label_names[D.items[item].labels[0]])}</b> · ` : "";
    return `<figure><a href="#x/${item}" title="${itemName(item)}"><img alt="${itemName(item)}" src="${D.images[item]}"></a><figcaption>${label}${fmt(s.top_impact[r])}<br><a href="#x/${item}">${itemName(item)}</a></figcaption></figure>`;
  }).join("")}</div>`;
}
function vectorCells(x) {
  const m = Math.max(...x.map(Math.abs)) || 1;
  return x.map(v => `<td class="cell" style="background:rgba(var(${v >= 0 ? "--pos" : "--neg"}),${(0.75 * Math.abs(v) / m).toFixed(3)})">${v ? fmt(v, 2) : ""}</td>`).join("");
}
function featureHeader() {
  const n = D.items[Object.keys(D.items)[0]].x.length;
  return (D.feature_names || [...Array(n).keys()].map(i => "x" + i)).map(f => `<th class="num">${esc(f)}</th>`).join("");
}
function vectorSamples(k) {
  const s = S[k];
  return `<table class="vec"><thead><tr><th class="num">rank</th><th class="num">impact</th><th>sample</th>${D.label_names ? "<th>label</th>" : ""}${featureHeader()}</tr></thead><tbody>${s.top.map((item, r) => {
    const e = D.items[item];
    return `<tr><td class="num">${r + 1}</td><td class="num">${fmt(s.top_impact[r])}</td><td><a href="#x/${item}">${itemName(item)}</a></td>${e.labels ? `<td>${esc(D.label_names[e.labels[0]])}</td>` : ""}${vectorCells(e.x)}</tr>`;
  }).join("")}</tbody></table>`;
}

// --- a subnetwork ------------------------------------------------------------------------------
function outputTable(rows, sign) {
  if (!rows.length) return `<div class="muted">none ${sign > 0 ? "raised" : "lowered"}</div>`;
  const m = Math.max(...rows.map(r => Math.abs(r[1])));
  return `<table class="outputs">${rows.map(([j, v]) => `<tr><td class="name">${esc(outName(j))}</td><td class="num">${v > 0 ? "+" : ""}${fmt(v)}</td>
    <td style="width:45%"><div style="height:8px;width:${(100 * Math.abs(v) / m).toFixed(1)}%;background:rgba(var(${sign > 0 ? "--pos" : "--neg"}),.7)"></div></td></tr>`).join("")}</table>`;
}
function subnetworkPage(k) {
  const s = S[k];
  const prev = k > 0 ? `<a href="#s/${k - 1}">‹ #${k - 1}</a>` : "", next = k < S.length - 1 ? `<a href="#s/${k + 1}">#${k + 1} ›</a>` : "";
  const threshold = s.top_impact.at(-1);
  const cards = [];
  cards.push(`<div class="card"><h3>Impact on the ${D.n_samples} samples</h3>${histogram(s.histogram.counts, 0, s.histogram.max, "impact I(x, v_" + k + ")", "samples", {marker: threshold, markerLabel: "smallest top-sample impact"})}
    <div class="note">dashed: the ${D.n_top}th largest impact (top samples to its right); y: log scale</div></div>`);
  cards.push(`<div class="card"><h3>Outputs it moves: ∂f/∂δ at δ = 0</h3><div class="muted">raised most</div>${outputTable(s.raised, 1)}
    <div class="muted" style="margin-top:4px">lowered most</div>${outputTable(s.lowered, -1)}<div class="note">f(x; W0 + δ d_${k}), mean over the top samples${D.kind === "texts" ? " at their positions" : ""}</div></div>`);
  const sw = s.sweep, xs = D.deltas;
  const series = sw.outputs.map((j, i) => ({name: outName(j), ys: sw.change.map(row => row[i]), color: PALETTE[i % PALETTE.length]}));
  cards.push(`<div class="card"><h3>Intervention sweep: f(x; W0 + δ d_${k}) − f(x; W0)</h3>${lineChart(xs, series, "δ", "mean output change", {zero: true})}
    ${lineChart(xs, [{name: "divergence", ys: sw.divergence, color: "#111"}], "δ", D.divergence === "kl" ? "KL(f(W0) ‖ f)" : "squared error", {h: 110})}
    <div class="note">mean over the top samples; d_${k} has unit norm</div></div>`);
  cards.push(`<div class="card"><h3>Most often active with</h3>${s.coactive.length ? `<table class="coactive"><thead><tr><th style="width:3.2em"></th><th class="num" style="width:6em" title="P(active | #${k} active)">P(·|#${k})</th><th class="num" style="width:3.6em">lift</th><th>its summary</th></tr></thead><tbody>${s.coactive.map(([l, p, lift]) => `<tr title="${esc(S[l].summary)}"><td>${subLink(l)}</td><td class="num">${pct(p)}</td><td class="num">${fmt(lift, 2)}×</td><td class="summary muted">${esc(S[l].summary)}</td></tr>`).join("")}</tbody></table>` : '<div class="muted">never active together with another subnetwork</div>'}
    <div class="note">active: BatchTopK (top_k ${D.top_k}) over the impacts of all samples; lift = P(active | #${k}) / P(active)</div></div>`);
  if (D.circuit_names) {
    const m = Math.max(...s.circuits);
    cards.push(`<div class="card"><h3>|cos| of d_${k} with the ground-truth circuits</h3><table class="outputs">${s.circuits.map((c, i) => `<tr><td class="name">${esc(D.circuit_names[i])}</td><td class="num">${fmt(c)}</td><td style="width:55%"><div style="height:8px;width:${(100 * c).toFixed(1)}%;background:${c === m ? "#2b8a3e" : "#adb5bd"}"></div></td></tr>`).join("")}</table></div>`);
  }
  const samples = D.kind === "texts" ? textSamples(k) : D.kind === "images" ? imageSamples(k) : vectorSamples(k);
  const note = D.kind === "texts" ? "each token is shaded by the subnetwork's impact on predicting it (relative to the top sample); outlined: the sample's target token; hover a token for its value" : "";
  app.innerHTML = `<nav><a href="#">← all subnetworks</a>${prev}${next}</nav>
  <h1>Subnetwork ${k} <span class="badge ${s.dead ? "dead" : "live"}">${s.dead ? "dead" : "live"}</span></h1>
  <div class="stats"><span>P_act <b>${fmt(s.p_act)}</b></span><span>active on shown samples <b>${fmt(s.active_here)}</b></span><span>mean impact <b>${fmt(s.mean_impact)}</b></span>
  <span>max impact <b>${fmt(s.max_impact)}</b></span>${D.label_names ? `<span>top label <b>${esc(labelOf(k))}</b> (${pct(s.purity)} of top samples)</span>` : ""}<span class="muted">${esc(s.summary)}</span></div>
  <div class="cards">${cards.join("")}</div>
  <h2>Top ${s.top.length} samples by impact</h2><div class="muted" style="margin-bottom:4px">${note}</div><div id="samples">${samples}</div>`;
}

// --- a sample (text, image or vector) ----------------------------------------------------------
function itemPage(item) {
  const e = D.items[item];
  if (!e) { app.innerHTML = `<nav><a href="#">← all subnetworks</a></nav><p>${itemName(item)} is not among any subnetwork's top samples.</p>`; return; }
  const subs = list => list.map(([k, v]) => `<a href="#s/${k}" title="impact ${fmt(v)}">#${k} <span class="muted">${fmt(v)}</span></a>`).join("");
  let body = "";
  if (D.kind === "texts") {
    const rows = e.ids.slice(1).map((id, p) => `<tr><td class="num">${p}</td><td class="tokens">${esc(D.vocabulary[String(e.ids[p])].trim())} → <b>${esc(D.vocabulary[String(id)].trim())}</b></td>${e.labels ? `<td>${esc(D.label_names[e.labels[p]])}</td>` : ""}<td class="subs">${subs(e.top[p])}</td></tr>`);
    const best = e.top.map(t => t[0][1]), m = Math.max(...best) || 1;
    body = `<div class="tokens" style="margin:8px 0">${tokenSpans(item, best.map(v => v / m), -1, e.top.map(t => `largest impact: #${t[0][0]} ${fmt(t[0][1])}`))}</div>
      <div class="muted">tokens shaded by the largest impact of any subnetwork on predicting them</div>
      <table style="margin-top:8px; width:auto"><thead><tr><th class="num">position</th><th>input → target</th>${e.labels ? "<th>label</th>" : ""}<th>subnetworks with the largest impact</th></tr></thead><tbody>${rows.join("")}</tbody></table>`;
  } else {
    const label = e.labels ? `<p>label <b>${esc(D.label_names[e.labels[0]])}</b></p>` : "";
    const shown = D.kind === "images" ? `<div class="big"><img alt="${itemName(item)}" src="${D.images[item]}"></div>` : `<table class="vec"><thead><tr>${featureHeader()}</tr></thead><tbody><tr>${vectorCells(e.x)}</tr></tbody></table>`;
    body = `${shown}${label}<h2>Subnetworks with the largest impact</h2><div class="subs">${subs(e.top[0])}</div>`;
  }
  const tops = S.map((s, k) => [k, s.top.findIndex(t => Math.floor(t / D.length) === Number(item))]).filter(([, r]) => r >= 0);
  app.innerHTML = `<nav><a href="#">← all subnetworks</a></nav><h1>${itemName(item)}</h1>${body}
    <h2>Top sample of</h2><div class="subs">${tops.map(([k, r]) => `<a href="#s/${k}">#${k} <span class="muted">rank ${r + 1}</span></a>`).join("")}</div>`;
}

function route() {
  const m = location.hash.match(/^#(s|x)\/(\d+)$/);
  if (m && m[1] === "s" && +m[2] < S.length) subnetworkPage(+m[2]);
  else if (m && m[1] === "x") itemPage(m[2]);
  else indexPage();
  window.scrollTo(0, 0);
}
window.addEventListener("hashchange", route);
route();
"""

if __name__ == "__main__":
    main()
