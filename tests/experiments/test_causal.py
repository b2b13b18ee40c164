"""Causal selectivity (l3d.experiments.causal) against a hand computation, and on subnetworks built to be selective."""
import pytest
import torch
from torch import nn

import l3d
from l3d.experiments.causal import (
    LISTS,
    causal_selectivity,
    other_samples,
    pool,
    random_directions,
    sample_divergences,
    selectivity,
    summarize,
)


def hand_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(p) ‖ softmax(q)) per row, written out: Σ_j p_j (log p_j − log q_j)."""
    p = p_logits.exp() / p_logits.exp().sum(-1, keepdim=True)
    q = q_logits.exp() / q_logits.exp().sum(-1, keepdim=True)
    return (p * (p.log() - q.log())).sum(-1)


def linear_setting(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Linear(3, 4).double()
    inputs = torch.randn(6, 3, dtype=torch.float64)
    d = l3d.Decomposition({"weight": (4, 3), "bias": (4,)}, 2, rank=4, seed=1).double()
    directions = [{"weight": torch.randn(4, 3, dtype=torch.float64), "bias": torch.randn(4, dtype=torch.float64)}
                  for _ in range(2)]
    for k, direction in enumerate(directions):
        d.set_subnetwork_(k, direction)          # full rank: kept exactly, scaled to norm 1 over both tensors
    return model, inputs, d, directions


def test_selectivity_is_the_hand_computed_ratio_of_mean_kl_on_top_and_other_samples():
    model, inputs, d, directions = linear_setting()
    top, others, deltas = torch.tensor([[0, 1], [2, 3]]), torch.tensor([1, 2, 4, 5]), [-0.3, 0.2, 0.7]
    got = selectivity(model, d, inputs, top, others, deltas)
    W, b = model.weight.detach(), model.bias.detach()
    base = inputs @ W.T + b
    for k, direction in enumerate(directions):
        norm = (direction["weight"].pow(2).sum() + direction["bias"].pow(2).sum()).sqrt()
        dW, db = direction["weight"] / norm, direction["bias"] / norm
        kl = torch.stack([hand_kl(base, inputs @ (W + delta * dW).T + b + delta * db) for delta in deltas])   # (D, 6)
        mine = top[k].tolist()
        rest = [i for i in others.tolist() if i not in mine]           # the top samples are taken out of the others
        on_top, on_rest = kl[:, mine].mean(1), kl[:, rest].mean(1)
        torch.testing.assert_close(got.top[k], on_top.mean(), rtol=1e-10, atol=0)
        torch.testing.assert_close(got.others[k], on_rest.mean(), rtol=1e-10, atol=0)
        torch.testing.assert_close(got.ratio[k], on_top.mean() / on_rest.mean(), rtol=1e-10, atol=0)
        torch.testing.assert_close(got.ratio_per_delta[k], on_top / on_rest, rtol=1e-10, atol=0)
    assert got.subnetworks == [0, 1]


class PositionModel(nn.Module):
    """Tokens -> an embedding -> a linear head, position by position, plus a per-position offset (so that a
    mix-up of positions changes the outputs): (texts, L) -> (texts, L, 4)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(5, 3)
        self.head = nn.Linear(3, 4)
        self.offset = nn.Parameter(torch.randn(6, 4))

    def forward(self, tokens):
        return self.head(self.embed(tokens)) + self.offset[: tokens.shape[1]]


def test_sequence_samples_are_text_times_length_plus_position():
    torch.manual_seed(3)
    model = PositionModel().double()
    tokens = torch.randint(0, 5, (5, 6))
    d = l3d.Decomposition({"head.weight": (4, 3), "head.bias": (4,)}, 1, rank=4, seed=2).double()
    deltas = [0.5, -1.0]
    per_sample = sample_divergences(model, d, 0, deltas, tokens, sequence=True)            # (D, 5 · 6)
    dW, db = (t[0] for t in d.decoder_directions().values())
    W, b = model.head.weight.detach(), model.head.bias.detach()
    e = model.embed.weight.detach()[tokens]                                                # (5, 6, 3)
    base = e @ W.T + b + model.offset.detach()
    want = torch.stack([hand_kl(base, e @ (W + t * dW).T + b + t * db + model.offset.detach()) for t in deltas])
    torch.testing.assert_close(per_sample, want.flatten(1), rtol=1e-10, atol=1e-15)
    # the ratio reads samples item · 6 + position: text 3 position 4 is sample 22, text 0 position 1 is sample 1
    top, others = torch.tensor([[22, 1]]), torch.tensor([6, 7, 8, 9, 10, 11])              # the others: text 1
    got = selectivity(model, d, tokens, top, others, deltas, sequence=True)
    flat = want.flatten(1)
    torch.testing.assert_close(got.ratio[0], flat[:, [22, 1]].mean() / flat[:, 6:12].mean(), rtol=1e-10, atol=0)


def selective_setting(n_top: int = 40, n_other: int = 200, leak: float = 0.05, n_subnetworks: int = 31):
    """A near-uniform linear classifier on unit-norm inputs: the top samples lie in the first four input dimensions,
    the others in the last four (plus `leak` in the first four). Subnetwork 0 moves only the weights reading the
    first four dimensions (a column block), the rest random directions."""
    g = torch.Generator().manual_seed(7)
    model = nn.Linear(8, 5).double()
    with torch.no_grad():
        model.weight.copy_(0.01 * torch.randn(5, 8, generator=g, dtype=torch.float64))
        model.bias.zero_()
    top_x = torch.cat([torch.randn(n_top, 4, generator=g, dtype=torch.float64),
                       torch.zeros(n_top, 4, dtype=torch.float64)], 1)
    other_x = torch.cat([leak * torch.randn(n_other, 4, generator=g, dtype=torch.float64),
                         torch.randn(n_other, 4, generator=g, dtype=torch.float64)], 1)
    inputs = torch.cat([top_x, other_x])
    inputs = inputs / inputs.norm(dim=1, keepdim=True)
    d = l3d.Decomposition({"weight": (5, 8), "bias": (5,)}, n_subnetworks, rank=8, seed=3).double()
    selective = torch.zeros(5, 8, dtype=torch.float64)
    selective[:, :4] = torch.randn(5, 4, generator=g, dtype=torch.float64)
    d.set_subnetwork_(0, {"weight": selective, "bias": torch.zeros(5, dtype=torch.float64)})
    top = torch.arange(n_top).expand(n_subnetworks, n_top)
    others = torch.arange(n_top, n_top + n_other)
    return model, inputs, d, top, others


def test_a_subnetwork_built_to_be_selective_scores_high_and_random_directions_about_one():
    model, inputs, d, top, others = selective_setting()
    live = torch.zeros(d.n_subnetworks, dtype=torch.bool)
    live[0] = True
    result = causal_selectivity(model, d, inputs, top, live, others, deltas=[-0.5, 0.5], threshold=3.0, seed=11)
    # the others reach the moved weights only through their leak (about 0.05² of their squared norm): ρ in the
    # hundreds (156 with these seeds)
    assert result["median_ratio"] > 50
    assert result["fraction_selective"] == 1.0 and result["median_gain"] > 50   # against its random twin (ρ ≈ 1)
    # random directions of the same ranks and norm move both sets alike: the median of 31 random ρ is near 1 (0.987
    # with seed 11, 0.984-1.003 with seeds 12-19; one ρ alone spreads from 0.74 to 3.6)
    everything = torch.ones(d.n_subnetworks, dtype=torch.bool)
    over_all = causal_selectivity(model, d, inputs, top, everything, others, deltas=[-0.5, 0.5], seed=11)
    assert 0.9 < over_all["random_median_ratio"] < 1.1
    assert over_all["n_live"] == 31 and len(over_all["random_ratio"]) == 31
    assert over_all["random_fraction_above_threshold"] < 0.2


def test_random_directions_keep_every_decoder_norm_and_tucker_rank():
    d = l3d.Decomposition({"a": (6, 5), "b": (6,)}, 4, rank=2, seed=0, decoder_norm="sum")
    with torch.no_grad():
        d.decoder[0].core.mul_(torch.tensor([1.0, 2.0, 0.5, 3.0]).view(4, 1, 1))    # norms other than 1
    rand = random_directions(d, seed=5)
    torch.testing.assert_close(rand.flat_directions().norm(dim=1), d.flat_directions().norm(dim=1), rtol=1e-5, atol=0)
    assert rand.ranks == d.ranks and rand.shapes == d.shapes
    assert torch.linalg.matrix_rank(rand.decoder_directions()["a"][0]) == 2
    cosine = torch.nn.functional.cosine_similarity(rand.flat_directions(), d.flat_directions(), dim=1)
    assert cosine.abs().max() < 0.9                                                # not the decomposition's directions
    assert torch.equal(random_directions(d, seed=5).flat_directions(), rand.flat_directions())   # seeded


def test_other_samples_are_whole_items_drawn_without_replacement():
    others = other_samples(10, 3, per_item=4, seed=1)
    items = others.view(3, 4) // 4
    assert (items == items[:, :1]).all() and len(set(items[:, 0].tolist())) == 3
    assert torch.equal(others.view(3, 4) % 4, torch.arange(4).expand(3, 4))
    assert torch.equal(other_samples(10, 3, per_item=4, seed=1), others)
    with pytest.raises(ValueError, match="n_other_items must lie in 1..10"):
        other_samples(10, 11)


def test_bad_arguments_are_named():
    model, inputs, d, _ = linear_setting()
    top, others = torch.tensor([[0, 1], [2, 3]]), torch.tensor([4, 5])
    with pytest.raises(ValueError, match="deltas must be a non-empty list of non-zero"):
        selectivity(model, d, inputs, top, others, deltas=[0.0, 1.0])
    with pytest.raises(ValueError, match=r"top must be \(n_subnetworks, n_top\)"):
        selectivity(model, d, inputs, top[:1], others)
    with pytest.raises(ValueError, match=r"others: sample indices must lie in 0..5"):
        selectivity(model, d, inputs, top, torch.tensor([9]))
    with pytest.raises(ValueError, match="no sample is left for subnetwork 0"):
        selectivity(model, d, inputs, top, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="kind must be one of"):
        sample_divergences(model, d, 0, [1.0], inputs, kind="cosine")
    with pytest.raises(ValueError, match="no subnetwork is live"):
        causal_selectivity(model, d, inputs, top, torch.zeros(2, dtype=torch.bool), others)


def test_small_divergences_of_a_float32_model_are_computed_in_float64():
    # at δ = 1e-3 the KL of confident predictions is about 1e-9, below float32's resolution of the log-probabilities
    # (computed in float32 it came out 0 or negative); from the same float32 logits in float64 it is exact
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    with torch.no_grad():
        model.weight.mul_(10)
    inputs = torch.randn(8, 3)
    d = l3d.Decomposition({"weight": (4, 3), "bias": (4,)}, 1, rank=4, seed=1)
    got = sample_divergences(model, d, 0, [1e-3], inputs)[0]
    outs = l3d.intervene(model, d, 0, [0.0, 1e-3], inputs).double()
    want = hand_kl(outs[0], outs[1])
    assert got.dtype == torch.float64 and (want > 0).all() and want.max() < 1e-6
    # float64 rounding of two formulas of a KL of 1e-11..1e-7: 4e-16 apart; in float32 they were 1e-7 apart
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-15)


def test_summary_numbers_by_hand_and_pooled_results_are_their_lists_joined():
    lists = {key: [] for key in LISTS} | {"subnetworks": [0, 2, 5], "ratio": [1.0, 4.0, 9.0],
                                          "random_ratio": [1.0, 1.0, 3.0],
                                          "top_divergence": [1.0, 2.0, 3.0], "other_divergence": [3.0, 1.0, 2.0],
                                          "random_top_divergence": [1.0, 1.0, 1.0],
                                          "random_other_divergence": [2.0, 2.0, 2.0],
                                          "ratio_per_delta": [[1.0, 2.0], [4.0, 3.0], [9.0, 9.0]],
                                          "random_ratio_per_delta": [[1.0, 1.0], [1.0, 2.0], [3.0, 3.0]]}
    s = summarize(lists, [-0.1, 0.1], 3.0, 7)
    # gains ρ / ρ(twin): 1, 4, 3
    assert ((s["median_ratio"], s["random_median_ratio"], s["median_over_random"], s["median_gain"])
            == (4.0, 1.0, 4.0, 3.0))
    assert s["fraction_selective"] == pytest.approx(2 / 3) and s["fraction_above_threshold"] == pytest.approx(2 / 3)
    assert s["random_fraction_above_threshold"] == pytest.approx(1 / 3)
    assert (s["median_top_divergence"], s["median_other_divergence"]) == (2.0, 2.0)
    assert s["median_ratio_per_delta"] == [4.0, 3.0] and s["random_median_ratio_per_delta"] == [1.0, 2.0]
    assert (s["n_live"], s["n_other"], s["deltas"]) == (3, 7, [-0.1, 0.1])

    model, inputs, d, _ = linear_setting()
    top, others, live = torch.tensor([[0, 1], [2, 3]]), torch.tensor([1, 2, 4, 5]), torch.tensor([True, True])
    first = causal_selectivity(model, d, inputs, top, live, others, deltas=[0.3])
    second = causal_selectivity(model, d, inputs, top.flip(0), live, others, deltas=[0.3])
    pooled = pool([first, second], offsets=[0, 2])
    assert pooled["subnetworks"] == [0, 1, 2, 3] and pooled["ratio"] == first["ratio"] + second["ratio"]
    assert pooled["median_ratio"] == torch.tensor(first["ratio"] + second["ratio"], dtype=torch.float64).median().item()
    with pytest.raises(ValueError, match=r"results\[1\] has other deltas"):
        pool([first, causal_selectivity(model, d, inputs, top, live, others, deltas=[0.2])])
