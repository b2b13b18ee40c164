"""Data-driven initialization: rank-reduced gradients, spread k-means++ style."""
import pytest
import torch

import l3d
import l3d.experiments.toys
import l3d.initialize
from l3d.initialize import init_from_gradients_, init_from_inputs_
from l3d.tucker import tucker_approximation


def test_tucker_approximation_is_exact_at_full_rank_and_truncated_svd_for_matrices():
    torch.manual_seed(0)
    t = torch.randn(3, 4, 2, dtype=torch.float64)
    core, factors = tucker_approximation(t, (3, 4, 2))
    torch.testing.assert_close(torch.einsum("pqr,ap,bq,cr->abc", core, *factors), t)
    m = torch.randn(5, 4, dtype=torch.float64)
    core, (u, v) = tucker_approximation(m, (2, 2))
    U, S, Vh = torch.linalg.svd(m)
    torch.testing.assert_close(u @ core @ v.T, U[:, :2] @ torch.diag(S[:2]) @ Vh[:2])
    core, (u,) = tucker_approximation(torch.randn(4, dtype=torch.float64), (3,))   # a vector at rank 3
    assert core.shape == (3,) and u.shape == (4, 3)


def test_init_picks_one_gradient_per_planted_circuit():
    torch.manual_seed(0)
    C = 4
    # 4 circuits, each a fixed rank-1 matrix plus bias; samples are random multiples of one circuit
    circuits_w = [torch.outer(torch.randn(3), torch.randn(5)) for _ in range(C)]
    circuits_b = [torch.randn(3) for _ in range(C)]
    which = torch.arange(200) % C
    scale = torch.rand(200) + 0.5
    grads = l3d.DenseGradients({
        "w": torch.stack([s * circuits_w[c] for s, c in zip(scale, which)]),
        "b": torch.stack([s * circuits_b[c] for s, c in zip(scale, which)]),
    })
    dec = l3d.Decomposition({"w": (3, 5), "b": (3,)}, C, rank=1, seed=0)
    picked = init_from_gradients_(dec, grads, seed=1)
    assert sorted(which[picked].tolist()) == list(range(C))
    decoder = dec.decoder_directions()
    flat = torch.cat([decoder["w"].flatten(1), decoder["b"]], 1)
    torch.testing.assert_close(flat.norm(dim=1), torch.ones(C))
    for k, i in enumerate(picked):
        g = grads.flat()[i]
        assert abs(torch.nn.functional.cosine_similarity(flat[k], g, dim=0)) > 1 - 1e-5
    for name, e in dec.encoder_directions().items():
        torch.testing.assert_close(e, decoder[name])
    with pytest.raises(ValueError, match="at least 4 gradients"):
        init_from_gradients_(dec, grads[:3])


def test_init_accepts_factored_gradients_from_a_collector():
    torch.manual_seed(0)
    model = l3d.experiments.toys.TMS(5, 2).untied()
    x = l3d.experiments.toys.sparse_features(64, 5, generator=torch.Generator().manual_seed(0))
    collector = l3d.GradientCollector(model, ["W_in", "W_out", "b"])
    grads = collector(x, generator=torch.Generator().manual_seed(1))
    dec = l3d.Decomposition(collector.shapes, 5, rank=1)
    picked = init_from_gradients_(dec, grads, seed=0)
    assert len(set(picked)) == 5
    dense = grads.dense().flat()
    decoder = torch.cat([d.flatten(1) for d in dec.decoder_directions().values()], 1)
    # rank-1 per tensor: each direction is the picked gradient with every tensor reduced to its top singular pair
    for k, i in enumerate(picked):
        assert torch.nn.functional.cosine_similarity(decoder[k], dense[i], dim=0) > 0.9


def test_init_from_inputs_is_init_from_their_gradients():
    model = l3d.experiments.toys.TMS(5, 2).untied()
    x = l3d.experiments.toys.sparse_features(64, 5, generator=torch.Generator().manual_seed(0))
    collector = l3d.GradientCollector(model, ["W_in", "W_out", "b"])
    by_inputs, by_grads = (l3d.Decomposition(collector.shapes, 5, rank=1, seed=3) for _ in range(2))
    picked = init_from_inputs_(by_inputs, collector, x, seed=7)
    assert picked == init_from_gradients_(by_grads, collector(x, generator=torch.Generator().manual_seed(7)), seed=7)
    for a, b in zip(by_inputs.parameters(), by_grads.parameters()):
        torch.testing.assert_close(a, b)
