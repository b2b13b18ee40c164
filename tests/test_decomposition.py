import pytest
import torch

import l3d


def test_loss_matches_materialized_reconstruction():
    torch.manual_seed(0)
    shapes = {"w": (4, 3), "b": (4,)}
    dec = l3d.Decomposition(shapes, n_subnetworks=6, rank={"w": (2, 2), "b": 2}, top_k=0.3).double()
    grads = l3d.DenseGradients({"w": torch.randn(10, 4, 3, dtype=torch.float64),
                                "b": torch.randn(10, 4, dtype=torch.float64)})
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


@pytest.mark.parametrize("shapes", [{"w": (4, 3), "b": (4,)}, {"k": (3, 2, 2), "b": (3,)}], ids=["fused", "generic"])
def test_dropped_energy_and_its_gradient_match_a_materialized_computation(shapes):
    # S = Σ over the coefficients BatchTopK drops of c²; fit(silence=λ) minimizes error + λ S
    torch.manual_seed(0)
    dec = l3d.Decomposition(shapes, n_subnetworks=5, rank=2, top_k=0.3).double()
    grads = l3d.DenseGradients({n: torch.randn(8, *s, dtype=torch.float64) for n, s in shapes.items()})
    assert dec.loss(grads).dropped_energy is None
    parts = dec.loss(grads, dropped_energy=True)
    (parts.error + 0.7 * parts.dropped_energy).backward()
    fast = [p.grad.clone() for p in dec.parameters()]
    dec.zero_grad()

    g = grads.flat()
    E = torch.cat([d.flatten(1) for d in dec.encoder_directions().values()], 1)
    D = torch.cat([d.flatten(1) for d in dec.decoder_directions().values()], 1)
    c = g @ E.T
    mask = l3d.batch_top_k(c, 0.3)
    dropped = (c * ~mask).pow(2).sum()
    torch.testing.assert_close(parts.dropped_energy, dropped, rtol=1e-10, atol=1e-12)
    assert dropped > 0 and torch.equal(parts.mask, mask)
    ((g - (c * mask) @ D).pow(2).sum() + 0.7 * dropped).backward()
    for a, b in zip(fast, [p.grad for p in dec.parameters()]):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_a_given_mask_replaces_batch_top_k_in_loss_and_dropped_energy():
    torch.manual_seed(0)
    shapes = {"w": (4, 3), "b": (4,)}      # shapes the fused path takes without a mask
    dec = l3d.Decomposition(shapes, n_subnetworks=3, rank=2, top_k=0.3).double()
    grads = l3d.DenseGradients({n: torch.randn(6, *s, dtype=torch.float64) for n, s in shapes.items()})
    mask = torch.tensor([[1, 0, 0], [0, 1, 1], [0, 0, 0], [1, 1, 1], [0, 0, 1], [1, 0, 0]], dtype=torch.bool)
    parts = dec.loss(grads, mask=mask, dropped_energy=True)
    g = grads.flat()
    E = torch.cat([d.flatten(1) for d in dec.encoder_directions().values()], 1)
    D = torch.cat([d.flatten(1) for d in dec.decoder_directions().values()], 1)
    c = g @ E.T
    torch.testing.assert_close(parts.loss, (g - (c * mask) @ D).pow(2).sum() / g.pow(2).sum(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(parts.dropped_energy, (c * ~mask).pow(2).sum(), rtol=1e-10, atol=1e-12)
    assert torch.equal(parts.mask.bool(), mask)
    with pytest.raises(ValueError, match=r"mask must be \(n_samples, n_subnetworks\) = \(6, 3\), got \(6, 2\)"):
        dec.loss(grads, mask=mask[:, :2])


def test_seed_draws_from_a_generator_of_its_own():
    """Decomposition(seed=s) starts from what torch.manual_seed(s) then a seedless Decomposition gives, and
    leaves torch's global generator where it was."""
    shapes = {"w": (4, 3), "conv": (3, 2, 2, 2), "b": (4,)}
    torch.manual_seed(5)
    before = torch.get_rng_state()
    seeded = l3d.Decomposition(shapes, 4, rank={"w": 2, "conv": (2, 1, 2, 1), "b": 1}, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(7)
    unseeded = l3d.Decomposition(shapes, 4, rank={"w": 2, "conv": (2, 1, 2, 1), "b": 1})
    for (name, a), b in zip(seeded.state_dict().items(), unseeded.state_dict().values()):
        assert torch.equal(a, b), name


def test_batch_top_k_keeps_exactly_the_requested_fraction():
    torch.manual_seed(0)
    for shape, k in [((32, 5), 0.1), ((10, 10), 0.37), ((7, 3), 1.0), ((4, 4), 0.01)]:
        c = torch.randn(shape)
        mask = l3d.batch_top_k(c, k)
        n_keep = max(1, round(k * c.numel()))
        assert mask.sum() == n_keep
        # the kept entries are the largest |c|
        assert c.abs()[mask].min() >= (c.abs()[~mask].max() if (~mask).any() else 0)
    with pytest.raises(ValueError, match="fraction"):
        l3d.batch_top_k(torch.randn(3, 3), 0.0)


def test_loss_top_k_override_and_zero_error_for_exact_reconstruction():
    torch.manual_seed(0)
    dec = l3d.Decomposition({"w": (3, 2)}, n_subnetworks=6, rank=2, top_k=0.5).double()
    # gradients that are exactly one decoder direction each, encoder = decoder: top_k=1 keeps all c
    D = dec.decoder_directions()["w"].detach()
    with torch.no_grad():
        dec.encoder.load_state_dict(dec.decoder.state_dict())
    grads = l3d.DenseGradients({"w": D[:1].expand(4, 3, 2).clone()})
    parts = dec.loss(grads, top_k=1.0)
    assert parts.mask.all()
    # c = G[0, :], ĝ = Σ_k G_0k d_k, compare with the materialized value
    G = (D.flatten(1) @ D.flatten(1).T)
    g_hat = G[0] @ D.flatten(1)
    expected = (D[0].flatten() - g_hat).pow(2).sum() / D[0].pow(2).sum()
    torch.testing.assert_close(parts.loss, expected)


def test_decoder_directions_are_unit_norm_after_a_fit_step():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    collector = l3d.GradientCollector(model, "*", divergence="mse")
    source = l3d.GradientSource(collector, torch.randn(64, 4), batch_size=16, chunk_size=32)
    dec = l3d.Decomposition(collector.shapes, n_subnetworks=5,
                            rank={"0.weight": 2, "0.bias": 1, "2.weight": (1, 2), "2.bias": 1})
    history = l3d.fit(dec, source, epochs=2, lr=0.05, progress=False)
    norms = sum(d.flatten(1).pow(2).sum(1) for d in dec.decoder_directions().values()).sqrt()
    torch.testing.assert_close(norms, torch.ones(5))
    assert len(history.reconstruction_error) == 2 and len(history.p_act[-1]) == 5
    # P_act: fraction of samples whose mask selects each subnetwork; BatchTopK keeps 10 % of 16 × 5
    assert abs(sum(history.p_act[-1]) - round(0.1 * 16 * 5) / 16) < 1e-6


@pytest.mark.parametrize("big", [False, True], ids=["small-model path", "Tucker path"])
def test_sum_decoder_norm_puts_the_sum_of_tensor_norms_at_one(big):
    # their normalize_low_ranks drives Σ_t ‖d_t‖ (not Σ_t ‖d_t‖²) to 1, at the start and after every step
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    collector = l3d.GradientCollector(model, "*", divergence="mse")
    source = l3d.GradientSource(collector, torch.randn(64, 4), batch_size=16, chunk_size=32)
    shapes = {**collector.shapes, "extra": (3, 3, 3)} if big else collector.shapes
    dec = l3d.Decomposition(shapes, n_subnetworks=5, rank=1, seed=0, decoder_norm="sum")

    def tensor_norms():
        return torch.stack([d.flatten(1).norm(dim=1) for d in dec.decoder_directions().values()])   # (tensors, C)

    torch.testing.assert_close(tensor_norms().sum(0), torch.ones(5))
    assert (tensor_norms().pow(2).sum(0) < 1 - 1e-3).all()      # so not unit norm
    unit = l3d.Decomposition(shapes, n_subnetworks=5, rank=1, seed=0)
    scale = tensor_norms().pow(2).sum(0).sqrt()                 # each subnetwork its own factor, the same directions
    for a, b in zip(dec.decoder_directions().values(), unit.decoder_directions().values()):
        torch.testing.assert_close(a, b * scale.view(-1, *[1] * (a.dim() - 1)))
    if not big:
        l3d.fit(dec, source, epochs=2, lr=0.05, progress=False)
        torch.testing.assert_close(tensor_norms().sum(0), torch.ones(5))


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    dec = l3d.Decomposition({"w": (4, 3, 2), "b": (4,)}, n_subnetworks=3, rank={"w": (2, 1, 2), "b": 1}, top_k=0.2,
                            seed=1)
    dec.save(tmp_path / "dec")
    assert sorted(p.name for p in (tmp_path / "dec").iterdir()) == ["config.json", "decomposition.safetensors"]
    loaded = l3d.Decomposition.load(tmp_path / "dec")
    assert loaded.config == dec.config
    for name in dec.names:
        torch.testing.assert_close(loaded.decoder_directions()[name], dec.decoder_directions()[name])
        torch.testing.assert_close(loaded.encoder_directions()[name], dec.encoder_directions()[name])
    grads = l3d.DenseGradients({"w": torch.randn(5, 4, 3, 2), "b": torch.randn(5, 4)})
    torch.testing.assert_close(loaded.loss(grads).loss, dec.loss(grads).loss)
    with pytest.raises(FileNotFoundError, match="Decomposition.save"):
        l3d.Decomposition.load(tmp_path / "missing")
    assert "decoder_norm" not in dec.config          # configs written before the option load as "unit"
    summed = l3d.Decomposition({"w": (4, 3, 2)}, n_subnetworks=3, rank=1, seed=1, decoder_norm="sum")
    summed.save(tmp_path / "sum")
    assert l3d.Decomposition.load(tmp_path / "sum").decoder_norm == "sum"


def test_bad_settings_are_explained():
    with pytest.raises(ValueError, match="n_subnetworks"):
        l3d.Decomposition({"w": (2, 2)}, 0)
    with pytest.raises(ValueError, match="lacks tensors"):
        l3d.Decomposition({"w": (2, 2), "b": (2,)}, 2, rank={"w": 1})
    with pytest.raises(ValueError, match="outside"):
        l3d.Decomposition({"w": (2, 2)}, 2, rank={"w": (3, 1)})
    with pytest.raises(ValueError, match=r"decoder_norm must be 'unit' .* or 'sum' .*, got 'l1'"):
        l3d.Decomposition({"w": (2, 2)}, 2, decoder_norm="l1")
    with pytest.raises(ValueError, match=r"decoder_norm must be one of \['unit', 'sum'\], got 'l1'"):
        l3d.L3DConfig(decoder_norm="l1")


def test_decoder_gram_matches_materialized_directions_for_every_tensor_order():
    torch.manual_seed(0)
    shapes = {"v": (5,), "m": (4, 3), "t": (3, 2, 4), "conv": (4, 3, 3, 2)}
    dec = l3d.Decomposition(shapes, n_subnetworks=4,
                            rank={"v": 2, "m": (2, 3), "t": (2, 1, 3), "conv": (2, 2, 1, 2)}).double()
    D = torch.cat([d.flatten(1) for d in dec.decoder_directions().values()], 1)
    torch.testing.assert_close(dec.decoder_gram(), D @ D.T)
    torch.testing.assert_close(dec.decoder_gram().diagonal(), torch.ones(4, dtype=torch.float64))


def test_flat_directions_and_unflatten_are_inverse_and_follow_the_tensors_order():
    dec = l3d.Decomposition({"w": (3, 4), "b": (3,)}, 2, rank=1, seed=0)
    D = dec.flat_directions()
    full = dec.decoder_directions()
    torch.testing.assert_close(D, torch.cat([full["w"].flatten(1), full["b"]], 1), rtol=0, atol=0)
    back = dec.unflatten(D[1])
    assert torch.equal(back["w"], full["w"][1]) and torch.equal(back["b"], full["b"][1])
    with pytest.raises(ValueError, match="part must be 'encoder' or 'decoder', got 'middle'"):
        dec.flat_directions("middle")
