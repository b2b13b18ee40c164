import torch

import l3d


def test_loss_matches_materialized_reconstruction():
    torch.manual_seed(0)
    shapes = {"w": (4, 3), "b": (4,)}
    dec = l3d.Decomposition(shapes, n_subnetworks=6, rank={"w": (2, 2), "b": 2}, top_k=0.3).double()
    grads = l3d.DenseGradients({"w": torch.randn(10, 4, 3, dtype=torch.float64), "b": torch.randn(10, 4, dtype=torch.float64)})
    parts = dec.loss(grads)
    g = grads.flat()
    E = torch.cat([d.flatten(1) for d in dec.encoder_directions().values()], 1)
    D = torch.cat([d.flatten(1) for d in dec.decoder_directions().values()], 1)
    c = g @ E.T
    mask = l3d.batch_top_k(c, 0.3)
    g_hat = (c * mask) @ D
    expected = (g - g_hat).pow(2).sum() / g.pow(2).sum()
    torch.testing.assert_close(parts.loss, expected, rtol=1e-10, atol=1e-12)
    assert mask.sum() == round(0.3 * 60)
