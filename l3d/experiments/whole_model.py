"""L3D on every weight tensor of a GPT-Neo at once (notebook 08), against one block (notebook 05) and one
decomposition per layer.

    settings = WholeModelExperiment.from_parameters(globals())
    loaded = load_model_and_texts(settings)                           # l3d.experiments.transformer
    whole = l3d.decompose(loaded.model, inputs, whole_model_tensors(loaded.model), settings.l3d, sequence=True,
                          forward=logits)
    shares = group_shares(whole.decomposition, tensor_layer)          # (C, layers): where each subnetwork lives

The whole-model decomposition is the paper's objective over the concatenated gradient of every chosen tensor,
g_i = (g_i^(attention 0), g_i^(MLP 0), g_i^(attention 1), …): one BatchTopK budget per token shared by all layers,
every subnetwork free to take weight in any of them. Its two references:
- the single block of notebook 05 (one layer's attention, the same settings and texts: it is 05's run);
- one decomposition per layer, n_subnetworks / n_layers subnetworks each. Their union is a decomposition of the
  same concatenated gradient whose subnetworks each live in one layer, so its reconstruction error
  Σ_layers Σ_i ||g_i^(l) − ĝ_i^(l)||² / Σ_i ||g_i||² compares with the whole model's directly.

Where a subnetwork lives: the share of its decoder's squared norm in each tensor, ||d_k,t||² / Σ_t' ||d_k,t'||², summed
per layer (`tensor_layer`) or per block (`tensor_block`).

`held_out` measures every decomposition on one pass of gradients of the whole model's tensors (each reads its own
tensors from them): the impact of each subnetwork on every sample (as `l3d.impact`, references drawn within chunks
of `chunk_items` items, as training draws them) and each decomposition's residual per tensor (BatchTopK over
batches of `batch_items` items, as in training), so errors per tensor, block and layer follow.
`causal_selectivities` measures what each decomposition's subnetworks do (`l3d.experiments.causal`), the per-layer
ones pooled into one.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..decomposition import Decomposition, batch_top_k
from ..divergences import reference_outputs
from ..gradients import GradientCollector
from ..pipeline import L3DConfig
from ..runtime.settings import bounded
from ..runtime.validate import as_int, as_seed
from .causal import pool
from .model_experiment import selectivity_metrics
from .transformer import SETTINGS as BLOCK_SETTINGS
from .transformer import TransformerExperiment, logits

# Notebook 08's settings per source: notebook 05's (the single block is 05's run), the whole model's tensors with the
# dense engine, which on the embedded model's 25k weights costs a third of the factored one per step (0.18 s against
# 0.60 s for 16 texts, 200 subnetworks of rank 8, one thread; the factored engine wins on wide layers:
# benchmarks/whole_model.py).
SETTINGS = {
    "embedded": dict(BLOCK_SETTINGS["embedded"], engine="dense"),
    "paper": dict(BLOCK_SETTINGS["paper"], engine="auto"),
}

_LAYER = re.compile(r"(?:^|\.)h\.(\d+)\.")


def whole_model_tensors(model: nn.Module, embeddings: bool = False, layer_norms: bool = False) -> list[str]:
    """Globs naming every attention and MLP tensor of every layer of GPT-Neo `model` (weights and biases), with the
    token and position embeddings and the layer norms when asked for. (The token embedding is tied to the output
    head, so its gradients are computed densely.)"""
    globs = ["transformer.h.*.attn.attention.*", "transformer.h.*.mlp.*"]
    if embeddings:
        globs += ["transformer.wte.weight", "transformer.wpe.weight"]
    if layer_norms:
        globs += ["transformer.h.*.ln_*", "transformer.ln_f.*"]
    return globs


def layer_tensors(model: nn.Module, layer: int, layer_norms: bool = False) -> list[str]:
    """Globs naming the attention and MLP tensors of GPT-Neo `model`'s layer `layer` (and its layer norms)."""
    n_layers = model.config.num_layers
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer} does not exist: the model has layers 0..{n_layers - 1}")
    globs = [f"transformer.h.{layer}.attn.attention.*", f"transformer.h.{layer}.mlp.*"]
    return globs + [f"transformer.h.{layer}.ln_*"] if layer_norms else globs


def tensor_layer(name: str) -> str:
    """The layer a tensor of GPT-Neo belongs to: "layer 0", "layer 1", …, or "embeddings" / "final norm"."""
    found = _LAYER.search(name)
    if found:
        return f"layer {found.group(1)}"
    return "final norm" if ".ln_f." in name else "embeddings"


def tensor_block(name: str) -> str:
    """The block a tensor of GPT-Neo belongs to: "attention 0", "MLP 0", "norms 0", …, "embeddings", "final norm"."""
    found = _LAYER.search(name)
    if not found:
        return tensor_layer(name)
    kind = "attention" if ".attn." in name else "MLP" if ".mlp." in name else "norms"
    return f"{kind} {found.group(1)}"


# --- where each subnetwork lives --------------------------------------------------------------------------
def decoder_shares(decomposition: Decomposition) -> Tensor:
    """||d_k,t||² / Σ_t' ||d_k,t'||²: the share of each subnetwork's decoder in each tensor t, (C, tensors) in the
    decomposition's order; every row sums to 1."""
    with torch.no_grad():
        squares = torch.stack([d.flatten(1).double().pow(2).sum(1)
                               for d in decomposition.decoder_directions().values()], 1)
    return (squares / squares.sum(1, keepdim=True).clamp_min(1e-300)).cpu()


def group_shares(decomposition: Decomposition, group: Callable[[str], str]) -> tuple[Tensor, list[str]]:
    """The decoder shares (`decoder_shares`) summed per group of tensors, e.g. group=tensor_layer: ((C, groups), the
    group names in the order they first appear among the decomposition's tensors)."""
    names = [group(n) for n in decomposition.names]
    groups = list(dict.fromkeys(names))
    index = torch.tensor([groups.index(g) for g in names])
    shares = decoder_shares(decomposition)
    return torch.zeros(shares.shape[0], len(groups), dtype=shares.dtype).index_add_(1, index, shares), groups


def spanning(shares: Tensor, share: float, at_least: int = 2) -> Tensor:
    """Which subnetworks span `at_least` groups: at least that many groups each hold ≥ `share` of the subnetwork's
    decoder (shares: (C, groups) from `group_shares`). Returns (C,) bool."""
    if not 0 < share <= 1 / at_least:
        raise ValueError(f"share must lie in (0, {1 / at_least:g}] for {at_least} groups to hold it each, got {share}")
    return (shares >= share).sum(1) >= at_least


def share_notes(shares: Tensor, groups: Sequence[str]) -> list[str]:
    """One line per subnetwork naming its share in each group, largest first (shares: (C, groups)), e.g.
    "layer 1 71% · layer 0 29%": the dashboard shows it with each subnetwork."""
    notes = []
    for row in shares.tolist():
        order = sorted(range(len(groups)), key=lambda g: -row[g])
        notes.append(" · ".join(f"{groups[g]} {row[g]:.0%}" for g in order if row[g] >= 0.005))
    return notes


def where_metrics(decomposition: Decomposition, live: Tensor, span_share: float) -> dict:
    """Where the live subnetworks (live: (C,) bool) of a whole-model decomposition live, for metrics.json: the mean
    share of their decoders in each layer and block, how many have each block as their largest ("home_blocks"), and
    how many span two layers or more at `span_share` (`spanning`): n_spanning and spanning_fraction."""
    layers, layer_names = group_shares(decomposition, tensor_layer)
    blocks, block_names = group_shares(decomposition, tensor_block)
    live = live.cpu()
    spans = (spanning(layers[live], span_share) if len(layer_names) > 1
             else torch.zeros(int(live.sum()), dtype=torch.bool))
    home = blocks[live].argmax(1)
    return {"mean_layer_share": dict(zip(layer_names, layers[live].mean(0).tolist())),
            "mean_block_share": dict(zip(block_names, blocks[live].mean(0).tolist())),
            "home_blocks": {b: int((home == i).sum()) for i, b in enumerate(block_names)},
            "n_spanning": int(spans.sum()), "spanning_fraction": spans.double().mean().item(), "span_share": span_share,
            "n_live": int(live.sum())}


# --- measuring every decomposition on one pass of the whole model's gradients ------------------------------
@dataclass
class HeldOut:
    """What `held_out` measured: the impact of every decomposition's subnetworks on every sample (name -> (N, C),
    None when not asked for), each decomposition's residual per tensor Σ_i ||g_i,t − ĝ_i,t||² (name -> tensor -> sum)
    and the gradients' Σ_i ||g_i,t||² per tensor."""

    impact: dict[str, Tensor] | None
    residual: dict[str, dict[str, float]]
    total: dict[str, float]

    def error(self, name: str, tensors: Sequence[str] | None = None) -> float:
        """Decomposition `name`'s reconstruction error over `tensors` (default: its own):
        Σ_t residual_t / Σ_t total_t."""
        tensors = list(self.residual[name]) if tensors is None else list(tensors)
        return sum(self.residual[name][t] for t in tensors) / max(sum(self.total[t] for t in tensors), 1e-300)

    def union_error(self, names: Sequence[str]) -> float:
        """The reconstruction error of the union of decompositions `names` of disjoint tensors (one per layer):
        Σ residual / Σ total over all their tensors."""
        residual = sum(v for n in names for v in self.residual[n].values())
        return residual / max(sum(self.total[t] for n in names for t in self.residual[n]), 1e-300)

    def group_errors(self, name: str, group: Callable[[str], str]) -> dict[str, float]:
        """Decomposition `name`'s error over each group of its tensors (e.g. tensor_layer)."""
        groups: dict[str, list[str]] = {}
        for t in self.residual[name]:
            groups.setdefault(group(t), []).append(t)
        return {g: self.error(name, ts) for g, ts in groups.items()}


@torch.no_grad()
def held_out(
    decompositions: Mapping[str, Decomposition],
    collector: GradientCollector,
    inputs: Tensor,
    batch_items: int,
    n_ref: int = 1,
    seed: int = 0,
    chunk_items: int = 64,
    impact: bool = True,
) -> HeldOut:
    """Every decomposition measured on the gradients of `collector` (whose tensors include each decomposition's) on
    `inputs`, chunk by chunk (chunk_items items, a multiple of batch_items): for each of n_ref reference draws (random
    references within the chunk, seeded) the gradients are computed once and every decomposition reads its tensors;
    impact (when asked for) is mean_j |<e_k, g_i(ref_j)>| over the draws, as `l3d.impact`; the residuals are those of
    the first draw, BatchTopK over batches of batch_items items (the training batch).
    """
    batch_items, n_ref, chunk_items = (as_int("batch_items", batch_items), as_int("n_ref", n_ref),
                                       as_int("chunk_items", chunk_items))
    if batch_items < 1 or n_ref < 1 or chunk_items < batch_items or chunk_items % batch_items:
        raise ValueError(f"need batch_items >= 1, n_ref >= 1 and chunk_items a multiple of batch_items, got "
                         f"batch_items={batch_items}, n_ref={n_ref}, chunk_items={chunk_items}")
    shapes = collector.shapes
    for name, d in decompositions.items():
        missing = [t for t in d.names if t not in shapes]
        if missing:
            raise ValueError(f"decompositions[{name!r}] has tensors {missing} that the collector does not compute")
    generator = torch.Generator().manual_seed(as_seed("seed", seed))
    directions = {n: (d.flat_directions("encoder").detach(), d.flat_directions("decoder").detach())
                  for n, d in decompositions.items()}
    sizes = {t: math.prod(s) for t, s in shapes.items()}
    scores: dict[str, list[Tensor]] = {n: [] for n in decompositions}
    residual = {n: {t: 0.0 for t in d.names} for n, d in decompositions.items()}
    total = {t: 0.0 for t in shapes}
    for chunk in inputs.split(chunk_items):
        outputs = collector.outputs(chunk)
        per_item = outputs.shape[0] // chunk.shape[0]
        summed = {n: 0.0 for n in decompositions}
        for j in range(n_ref):
            refs = reference_outputs(outputs, collector.divergence, collector.reference, generator)
            grads = collector(chunk, references=refs).dense().grads                 # tensor -> (S, *shape)
            if j == 0:
                for t, g in grads.items():
                    total[t] += g.flatten(1).double().pow(2).sum().item()
            for n, d in decompositions.items():
                flat = torch.cat([grads[t].flatten(1) for t in d.names], 1)          # (S, n_w of d)
                E, D = directions[n]
                c = flat @ E.T                                                     # (S, C)
                summed[n] = summed[n] + c.abs()
                if j == 0:
                    _add_residuals(residual[n], flat, c, D, d, batch_items * per_item, sizes)
        for n in decompositions:
            scores[n].append((summed[n] / n_ref).cpu())
    return HeldOut({n: torch.cat(s) for n, s in scores.items()} if impact else None, residual, total)


def _add_residuals(residual: dict[str, float], flat: Tensor, c: Tensor, D: Tensor, decomposition: Decomposition,
                   batch: int, sizes: dict[str, int]) -> None:
    """Add Σ_i ||g_i,t − ĝ_i,t||² per tensor t over the batches of `batch` samples of a chunk (flat: (S, n_w))."""
    for g, cb in zip(flat.split(batch), c.split(batch)):
        kept = cb * batch_top_k(cb, decomposition.top_k)
        parts = (g - kept @ D).split([sizes[t] for t in decomposition.names], 1)
        for t, r in zip(decomposition.names, parts):
            residual[t] += r.double().pow(2).sum().item()


# --- notebook 08: its settings ------------------------------------------------------------------------------
@dataclass(frozen=True)
class WholeModelExperiment(TransformerExperiment):
    """Notebook 08's settings: notebook 05's (model, texts, the single block `layer`, L3D, causal selectivity) and
    embeddings, layer_norms (decompose those tensors too; off: the attention and MLP tensors of every layer) and
    span_share (a subnetwork spans two layers when each holds at least this share of its decoder's squared norm).
    None: SETTINGS[source]."""

    DEFAULTS: ClassVar[dict[str, dict]] = SETTINGS

    out_dir: str = "figures/08_whole_model"
    embeddings: bool = False
    layer_norms: bool = False
    span_share: float = bounded(0.2, low=0, high=0.5, open_low=True)

    def block_config(self) -> L3DConfig:
        """The single block's decomposition: these settings as notebook 05 runs them (engine "auto")."""
        return self.l3d.replace(engine="auto")

    def layer_config(self, n_layers: int) -> L3DConfig:
        """One layer's decomposition: these settings with n_subnetworks / n_layers subnetworks."""
        if self.l3d.n_subnetworks % n_layers:
            raise ValueError(f"n_subnetworks {self.l3d.n_subnetworks} must be a multiple of the model's {n_layers} "
                             f"layers: the per-layer comparison splits it evenly")
        return self.l3d.replace(n_subnetworks=self.l3d.n_subnetworks // n_layers)


# --- notebook 08: causal selectivity of each decomposition ---------------------------------------------------------
def causal_selectivities(model: nn.Module, decompositions: Mapping[str, Decomposition], inputs: Tensor,
                         tops: Mapping[str, Tensor], p_acts: Mapping[str, Tensor], settings: WholeModelExperiment,
                         layer_names: Sequence[str]) -> dict[str, dict]:
    """Causal selectivity (`model_experiment.selectivity_metrics`: next-token KL on each live subnetwork's top
    tokens tops[name] (C, n_top) against the tokens of settings.n_other_texts held-out texts, p_acts[name] (C,)
    saying which are live) of the "whole", per-layer (`layer_names`) and "block" decompositions on the held-out
    texts `inputs` (N, length), for metrics.json: {"whole", "per_layer", "block"}. The per-layer results are pooled
    into one (`causal.pool`): subnetwork k of layer l is numbered o_l + k, o_l the subnetworks of the layers
    before l, as the per-layer decompositions' union numbers them."""
    def selectivity(name: str) -> dict:
        return selectivity_metrics(model, decompositions[name], inputs, tops[name], p_acts[name], settings,
                                   settings.n_other_texts, forward=logits, sequence=True)

    offsets = [sum(decompositions[k].n_subnetworks for k in layer_names[:i]) for i in range(len(layer_names))]
    return {"whole": selectivity("whole"), "per_layer": pool([selectivity(k) for k in layer_names], offsets),
            "block": selectivity("block")}


def owned_elsewhere(patterns: Mapping[str, Mapping[str, Any]], whole: str = "whole") -> dict:
    """Which corpus patterns the whole-model decomposition owns that none of the others does, and the reverse, from
    `pattern_purity` dicts by decomposition: {"only_whole": [...], "missed_by_whole": [...]} (pattern order kept)."""
    mine = patterns[whole]["owned_patterns"]
    others = {p for name, v in patterns.items() if name != whole for p in v["owned_patterns"]}
    order = list(patterns[whole]["best_pattern_purity"])
    return {"only_whole": [p for p in mine if p not in others],
            "missed_by_whole": [p for p in order if p in others and p not in mine]}


def comparison_row(method: str, trained: HeldOut, measured: HeldOut, names: Sequence[str], dead: int, n: int,
                   patterns: Mapping[str, Any] | None, causal: Mapping[str, Any]) -> dict:
    """One row of notebook 08's comparison: the decompositions `names` taken together (one, or one per layer) with
    their training and held-out errors (`HeldOut.union_error`), dead subnetworks (of n), the corpus patterns owned
    (`pattern_purity`'s dict, None for the paper source) and the causal selectivity (`causal_selectivity`'s dict)."""
    row = {"method": method, "subnetworks": n, "training error": f"{trained.union_error(names):.3f}",
           "held-out error": f"{measured.union_error(names):.3f}", "dead": f"{dead / n:.1%}"}
    if patterns is not None:
        row |= {"patterns owned": patterns["patterns_owned"],
                "mean pattern purity": f"{patterns['mean_pattern_purity']:.2f}"}
    return row | {"median ρ": f"{causal['median_ratio']:.3g}",
                  "random twins' median ρ": f"{causal['random_median_ratio']:.3g}",
                  "selective": f"{causal['fraction_selective']:.0%}"}
