"""Refitting: the power iteration against the materialized top eigenvector of each subnetwork's own samples,
planted circuits recovered from contaminated directions, too few samples leaving a direction alone, bad values."""
import pytest
import torch

import l3d
from l3d.refit import refit_

C = 3
SHAPES = {"w": (3, 4), "b": (3,)}


def circuits_and_batches(n=300, seed=0, pair_every=4):
    """C rank-1 circuits (weight + bias), flat (C, n_w); batches of samples, each a random multiple of one circuit,
    and every pair_every-th sample two circuits at once plus a cross term that belongs to neither."""
    g = torch.Generator().manual_seed(seed)
    w = [torch.outer(torch.randn(3, generator=g), torch.randn(4, generator=g)) for _ in range(C)]
    b = [torch.randn(3, generator=g) for _ in range(C)]
    circuits = torch.stack([torch.cat([w[c].flatten(), b[c]]) for c in range(C)]).double()
    circuits /= circuits.norm(dim=1, keepdim=True)
    cross = torch.randn(circuits.shape[1], generator=g, dtype=torch.float64)
    rows = []
    for i in range(n):
        a, scale = i % C, torch.rand(1, generator=g, dtype=torch.float64) + 0.5
        row = scale * circuits[a]
        if i % pair_every == 0:
            row = row + scale * circuits[(a + 1) % C] + 0.8 * scale * cross
        rows.append(row)
    flat = torch.stack(rows)
    grads = l3d.DenseGradients({"w": flat[:, :12].view(-1, 3, 4), "b": flat[:, 12:]})
    return circuits, [grads[i:i + 50] for i in range(0, n, 50)], cross


def decomposition_with(directions, rank=3):
    """A decomposition (float64, full Tucker ranks by default) whose subnetwork k has direction directions[k]."""
    dec = l3d.Decomposition(SHAPES, C, rank=rank, top_k=1 / C, seed=0).double()
    for k, d in enumerate(directions):
        dec.set_subnetwork_(k, {"w": d[:12].view(3, 4), "b": d[12:]})
    return dec


def flat(dec):
    d = dec.decoder_directions()
    return torch.cat([d["w"].flatten(1), d["b"]], 1).detach().double()


def test_refit_is_the_top_eigenvector_of_each_subnetworks_own_samples():
    circuits, batches, cross = circuits_and_batches()
    start = circuits + 0.3 * cross / cross.norm()                 # contaminated by the cross term
    dec = decomposition_with(start)
    trained = flat(dec)
    done = refit_(dec, batches, min_share=0.7, iterations=60)
    g = torch.cat([b.flat().double() for b in batches])
    unit = trained / trained.norm(dim=1, keepdim=True)
    share = (g @ unit.T).pow(2) / g.pow(2).sum(1, keepdim=True)
    best, owner = share.max(1)
    new = flat(dec)
    for k in range(C):
        mine = g[(owner == k) & (best >= 0.7)]
        assert done.samples[k] == mine.shape[0] > 0 and done.refitted[k]
        values, vectors = torch.linalg.eigh(mine.T @ mine)
        assert abs(new[k] @ vectors[:, -1]) == pytest.approx(1.0, abs=1e-9)
        assert done.cos[k] == pytest.approx(abs(new[k] @ unit[k]).item(), abs=1e-9)
    # the encoder follows the decoder
    enc = torch.cat([t.full().flatten(1) for t in dec.encoder], 1).detach().double()
    torch.testing.assert_close(enc, new)


def test_refit_recovers_the_planted_circuits_that_training_mixed_with_cross_terms():
    circuits, batches, cross = circuits_and_batches()
    start = circuits + 0.3 * cross / cross.norm()
    before = torch.nn.functional.cosine_similarity(start, circuits).abs()
    dec = decomposition_with(start, rank=1)                       # rank 1, as the circuits
    refit_(dec, batches)
    after = torch.nn.functional.cosine_similarity(flat(dec), circuits).abs()
    assert (before < 0.97).all() and (after > 0.9999).all(), (before, after)


def test_too_few_samples_of_its_own_leave_a_direction_as_it_was():
    """(up to the final renormalization of every decoder direction, a rounding error)"""
    circuits, batches, cross = circuits_and_batches()
    start = torch.stack([circuits[0], circuits[1], cross / cross.norm()])    # subnetwork 2 explains no sample alone
    dec = decomposition_with(start)
    kept = {k: v.clone() for k, v in dec.state_dict().items()}
    done = refit_(dec, batches, min_share=0.9)
    assert done.refitted == [True, True, False] and done.samples[2] == 0 and done.cos[2] == 1.0
    for k, v in dec.state_dict().items():
        if k.startswith(("decoder", "encoder")) and (".core" in k or ".factors" in k):
            torch.testing.assert_close(v[2], kept[k][2], rtol=0, atol=1e-14)


@pytest.mark.parametrize("changes, message", [
    ({"min_share": 1.0}, r"min_share must be in \(0, 1\)"),
    ({"min_share": 0}, r"min_share must be in \(0, 1\)"),
    ({"min_samples": 0}, "min_samples must be an int >= 1, got 0"),
    ({"iterations": 2.5}, r"iterations must be an int >= 1 \(passes of power iteration\), got 2.5"),
])
def test_bad_values_are_refused(changes, message):
    circuits, batches, _ = circuits_and_batches(n=60)
    dec = decomposition_with(circuits)
    with pytest.raises(ValueError, match=message):
        refit_(dec, batches, **changes)


def reordered(batches):
    """The same gradients with the tensors in the other order (b before w): the same flat size."""
    return [l3d.DenseGradients({"b": g.grads["b"], "w": g.grads["w"]}) for g in batches]


def test_refit_refuses_gradients_of_other_tensors_or_in_another_order_and_takes_numpy_ints():
    import numpy as np

    circuits, batches, _ = circuits_and_batches(n=60)
    dec = decomposition_with(circuits)
    kept = {k: v.clone() for k, v in dec.state_dict().items()}
    with pytest.raises(ValueError, match=r"does not fit the gradients's tensors: tensor order differs: decomposition "
                                         r"\['w', 'b'\], the gradients \['b', 'w'\]"):
        refit_(dec, reordered(batches))
    other = [l3d.DenseGradients({"w": g.grads["w"][:, :2], "b": g.grads["b"]}) for g in batches]
    with pytest.raises(ValueError, match=r"w: decomposition \(3, 4\), the gradients \(2, 4\)"):
        refit_(dec, other)
    assert all(torch.equal(v, kept[k]) for k, v in dec.state_dict().items())   # refused before any change
    assert refit_(dec, batches, min_samples=np.int64(3), iterations=np.int32(2)).refitted == [True] * C


def test_refit_refuses_a_source_whose_collector_has_other_tensors():
    from l3d.experiments.toys import TMS, sparse_features

    torch.manual_seed(0)
    collector = l3d.GradientCollector(TMS().untied(), ["W_in", "W_out", "b"])
    source = l3d.GradientSource(collector, sparse_features(32, 5, generator=torch.Generator().manual_seed(0)), 8)
    with pytest.raises(ValueError, match=r"does not fit the source's collector's tensors: b: decomposition \(3,\), the "
                                         r"source's collector \(5,\); only in the decomposition: \['w'\]"):
        refit_(decomposition_with(circuits_and_batches(n=60)[0]), source)
    with pytest.raises(ValueError, match=r"the decomposition is torch.float64 but the model's decomposed tensors are "
                                         r"\['torch.float32'\]"):
        refit_(l3d.Decomposition(collector.shapes, 3, seed=0).double(), source)
