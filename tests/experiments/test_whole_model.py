"""Whole-model L3D on GPT-Neo (l3d.experiments.whole_model): tensors by layer and block, where subnetworks live, and
every decomposition measured on one pass of the whole model's gradients."""
import pytest
import torch
from transformers import GPTNeoForCausalLM

import l3d
from l3d.divergences import reference_outputs
from l3d.experiments.corpus import Tokenizer
from l3d.experiments.model_experiment import selectivity_metrics
from l3d.experiments.transformer import attention_tensors, logits, story_config
from l3d.experiments.whole_model import (
    HeldOut,
    WholeModelExperiment,
    causal_selectivities,
    decoder_shares,
    group_shares,
    held_out,
    layer_tensors,
    share_notes,
    spanning,
    tensor_block,
    tensor_layer,
    whole_model_tensors,
)
from l3d.gradients import DenseGradients


@pytest.fixture(scope="module")
def tiny():
    """A GPT-Neo of width 8 with random weights (float64) and random texts of 6 tokens."""
    torch.manual_seed(0)
    model = GPTNeoForCausalLM(story_config(len(Tokenizer()), width=8, n_layers=2, n_heads=2, length=6)).double().eval()
    return model.requires_grad_(False), torch.randint(0, len(Tokenizer()), (10, 6))


def test_whole_model_tensors_are_every_attention_and_mlp_tensor_and_groups_name_their_layer(tiny):
    model, _ = tiny
    chosen = list(l3d.select_tensors(model, whole_model_tensors(model)))
    assert chosen == [n for n, _ in model.named_parameters() if ".attn.attention." in n or ".mlp." in n]
    assert len(chosen) == 18
    both = list(l3d.select_tensors(model, whole_model_tensors(model, embeddings=True, layer_norms=True)))
    assert set(both) - set(chosen) == {"transformer.wte.weight", "transformer.wpe.weight",
                                       "transformer.h.0.ln_1.weight", "transformer.h.0.ln_1.bias",
                                       "transformer.h.0.ln_2.weight", "transformer.h.0.ln_2.bias",
                                       "transformer.h.1.ln_1.weight",
                                       "transformer.h.1.ln_1.bias", "transformer.h.1.ln_2.weight",
                                       "transformer.h.1.ln_2.bias", "transformer.ln_f.weight", "transformer.ln_f.bias"}
    assert list(l3d.select_tensors(model, layer_tensors(model, 1))) == [n for n in chosen if ".h.1." in n]
    with pytest.raises(ValueError, match=r"layer 2 does not exist: the model has layers 0..1"):
        layer_tensors(model, 2)
    assert [tensor_layer(n) for n in ("transformer.h.0.mlp.c_fc.weight", "transformer.h.1.attn.attention.q_proj.weight",
                                      "transformer.wte.weight", "transformer.ln_f.bias")] == \
        ["layer 0", "layer 1", "embeddings", "final norm"]
    assert [tensor_block(n) for n in ("transformer.h.0.mlp.c_fc.weight", "transformer.h.1.attn.attention.out_proj.bias",
                                      "transformer.h.1.ln_2.weight", "transformer.wpe.weight")] == \
        ["MLP 0", "attention 1", "norms 1", "embeddings"]


def placed(shares_by_tensor: list[dict[str, float]]) -> l3d.Decomposition:
    """A decomposition over four tensors (two per layer) whose subnetwork k has squared norm shares_by_tensor[k][t]
    in tensor t (a random direction scaled per tensor; full rank, so kept exactly)."""
    shapes = {"h.0.a": (3, 2), "h.0.b": (4,), "h.1.a": (3, 2), "h.1.b": (4,)}
    d = l3d.Decomposition(shapes, len(shares_by_tensor), rank=4, seed=0).double()
    g = torch.Generator().manual_seed(1)
    for k, shares in enumerate(shares_by_tensor):
        direction = {}
        for name, shape in shapes.items():
            x = torch.randn(shape, generator=g, dtype=torch.float64)
            direction[name] = x / x.norm() * shares.get(name, 0.0) ** 0.5
        d.set_subnetwork_(k, direction)
    return d


def test_decoder_shares_are_each_tensors_share_of_the_squared_norm_and_groups_sum_them():
    wanted = [{"h.0.a": 0.7, "h.0.b": 0.3}, {"h.0.a": 0.25, "h.1.a": 0.25, "h.1.b": 0.5},
              {"h.0.b": 0.1, "h.1.a": 0.9}, {"h.1.b": 1.0}]
    d = placed(wanted)
    shares = decoder_shares(d)
    torch.testing.assert_close(shares, torch.tensor([[w.get(n, 0.0) for n in d.names] for w in wanted],
                                                    dtype=torch.float64), rtol=0, atol=1e-12)
    # the same from the full decoder directions, written out
    full = d.decoder_directions()
    by_hand = torch.stack([torch.stack([full[n][k].pow(2).sum() for n in d.names]) for k in range(4)])
    torch.testing.assert_close(shares, by_hand / by_hand.sum(1, keepdim=True), rtol=1e-12, atol=0)
    layers, names = group_shares(d, tensor_layer)
    assert names == ["layer 0", "layer 1"]
    torch.testing.assert_close(layers, torch.tensor([[1.0, 0.0], [0.25, 0.75], [0.1, 0.9], [0.0, 1.0]],
                                                    dtype=torch.float64), rtol=0, atol=1e-12)
    assert spanning(layers, 0.2).tolist() == [False, True, False, False]
    assert spanning(layers, 0.09).tolist() == [False, True, True, False]
    with pytest.raises(ValueError, match=r"share must lie in \(0, 0.5\]"):
        spanning(layers, 0.6)
    assert share_notes(layers, names) == ["layer 0 100%", "layer 1 75% · layer 0 25%", "layer 1 90% · layer 0 10%",
                                          "layer 1 100%"]


def test_held_out_impact_is_l3d_impact_and_its_residuals_are_the_losss_errors(tiny):
    model, texts = tiny
    whole_collector = l3d.GradientCollector(model, whole_model_tensors(model), divergence="kl", sequence=True,
                                            forward=logits, engine="dense")
    block_collector = l3d.GradientCollector(model, attention_tensors(model, 1), divergence="kl", sequence=True,
                                            forward=logits)
    whole = l3d.Decomposition(whole_collector.shapes, 6, rank=2, top_k=0.2, seed=1).double()
    block = l3d.Decomposition(block_collector.shapes, 4, rank=2, top_k=0.2, seed=2).double()
    measured = held_out({"whole": whole, "block": block}, whole_collector, texts, batch_items=2, n_ref=3, seed=4,
                        chunk_items=10)
    # one chunk of every text: the references are l3d.impact's draws, so the impacts are l3d.impact's
    torch.testing.assert_close(measured.impact["block"], l3d.impact(block, block_collector, texts, n_ref=3, seed=4),
                               rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(measured.impact["whole"], l3d.impact(whole, whole_collector, texts, n_ref=3, seed=4),
                               rtol=1e-9, atol=1e-12)
    # the residuals: those of the first draw, BatchTopK over batches of 2 texts (12 tokens), as the loss has them
    references = reference_outputs(whole_collector.outputs(texts), "kl", "random", torch.Generator().manual_seed(4))
    grads = whole_collector(texts, references=references).grads
    for name, d in (("whole", whole), ("block", block)):
        batches = DenseGradients({t: grads[t] for t in d.names})
        error = sum(d.loss(batches[i:i + 12]).error.item() for i in range(0, 60, 12))
        assert sum(measured.residual[name].values()) == pytest.approx(error, rel=1e-9)
        # per tensor, from the decoder directions written out
        for t in d.names:
            residual = 0.0
            for i in range(0, 60, 12):
                c = d.encode(batches[i:i + 12])
                kept = c * l3d.batch_top_k(c, d.top_k)
                residual += (grads[t][i:i + 12]
                             - torch.einsum("nk,k...->n...", kept, d.decoder_directions()[t])).pow(2).sum()
            assert measured.residual[name][t] == pytest.approx(residual.item(), rel=1e-9)
    assert measured.total == pytest.approx({t: g.pow(2).sum().item() for t, g in grads.items()}, rel=1e-12)
    assert measured.error("block") == pytest.approx(
        sum(measured.residual["block"].values()) / sum(measured.total[t] for t in block.names), rel=1e-12)
    with pytest.raises(ValueError, match="chunk_items a multiple of batch_items"):
        held_out({"whole": whole}, whole_collector, texts, batch_items=3, chunk_items=10)
    with pytest.raises(ValueError, match=r"decompositions\['block'\] has tensors"):
        held_out({"block": block}, block_collector.__class__(model, layer_tensors(model, 0), divergence="kl",
                                                             sequence=True, forward=logits), texts, batch_items=2)


def test_errors_of_a_union_of_per_layer_decompositions_and_per_group():
    measured = HeldOut(None, {"layer 0": {"h.0.a": 1.0, "h.0.b": 3.0}, "layer 1": {"h.1.a": 2.0},
                              "whole": {"h.0.a": 2.0, "h.0.b": 1.0, "h.1.a": 1.0}},
                       {"h.0.a": 4.0, "h.0.b": 6.0, "h.1.a": 10.0})
    assert measured.union_error(["layer 0", "layer 1"]) == pytest.approx(6.0 / 20.0)
    assert measured.error("layer 0") == pytest.approx(0.4)
    assert measured.error("whole", ["h.1.a"]) == pytest.approx(0.1)
    assert measured.group_errors("whole", tensor_layer) == pytest.approx({"layer 0": 0.3, "layer 1": 0.1})


def test_causal_selectivities_pool_the_per_layer_decompositions_numbered_as_their_union(tiny):
    model, texts = tiny
    settings = WholeModelExperiment.from_parameters({"n_other_texts": 3, "deltas": [-0.1, 0.1]})
    tensors = {"whole": whole_model_tensors(model), "layer 0": layer_tensors(model, 0),
               "layer 1": layer_tensors(model, 1), "block": attention_tensors(model, 1)}
    decompositions, tops, p_acts = {}, {}, {}
    for seed, (name, names) in enumerate(tensors.items()):
        shapes = l3d.GradientCollector(model, names, divergence="kl", sequence=True, forward=logits).shapes
        C = 2 if name.startswith("layer") else 4
        decompositions[name] = l3d.Decomposition(shapes, C, rank=1, top_k=0.5, seed=seed).double()
        tops[name] = torch.randint(0, texts.numel(), (C, 3), generator=torch.Generator().manual_seed(seed))
        p_acts[name] = torch.tensor([1.0] * (C - 1) + [0.0])                     # the last subnetwork dead
    found = causal_selectivities(model, decompositions, texts, tops, p_acts, settings, ["layer 0", "layer 1"])
    for name in ("whole", "block"):
        assert found[name] == selectivity_metrics(model, decompositions[name], texts, tops[name], p_acts[name],
                                                  settings, 3, forward=logits, sequence=True)
    assert found["per_layer"]["subnetworks"] == [0, 2]   # layer 1's subnetwork 0 after layer 0's two
    assert found["per_layer"]["n_live"] == 2


def test_settings_are_05s_with_the_dense_engine_and_name_bad_ones():
    s = WholeModelExperiment.from_parameters({})
    assert (s.l3d.n_subnetworks, s.l3d.rank, s.l3d.epochs, s.l3d.engine, s.layer) == (200, 8, 8, "dense", 1)
    assert s.block_config().engine == "auto" and s.block_config().n_subnetworks == 200
    assert s.layer_config(2).n_subnetworks == 100 and s.layer_config(2).engine == "dense"
    with pytest.raises(ValueError, match="n_subnetworks 200 must be a multiple of the model's 3 layers"):
        s.layer_config(3)
    with pytest.raises(ValueError, match="deltas must be non-zero step sizes δ"):
        WholeModelExperiment.from_parameters({"deltas": [0.0, 0.5]})
    with pytest.raises(ValueError, match=r"span_share must be > 0 and <= 0.5"):
        WholeModelExperiment.from_parameters({"span_share": 0.7})
