import math

import pytest
import torch
from torch import nn

import l3d
from l3d.experiments import ground_truth as R
from l3d.experiments.ground_truth import mmcs
from l3d.experiments.toys import MLP, circuit_superposition


def _set_rank1(decomposition, name, left, right):
    """Set encoder and decoder direction k of tensor `name` to left[k] ⊗ right[k] (rank 1)."""
    i = decomposition.names.index(name)
    with torch.no_grad():
        for tucker in (decomposition.encoder[i], decomposition.decoder[i]):
            tucker.core.fill_(1.0)
            tucker.factors[0].copy_(left.unsqueeze(-1))
            tucker.factors[1].copy_(right.unsqueeze(-1))


def _diagonal_model(n):
    model = nn.Linear(n, n, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.diag(torch.arange(1.0, n + 1)))
    return model


def test_exact_decomposition_is_matched_with_full_impact_share():
    n, perm = 4, [2, 0, 3, 1]   # subnetwork perm[j] serves feature j; subnetwork 4 is dead
    model = _diagonal_model(n)
    collector = l3d.GradientCollector(model, "weight")
    dec = l3d.Decomposition(collector.shapes, n_subnetworks=5, rank=1, seed=0)
    basis = torch.eye(n)
    left = torch.randn(5, n)
    for j, k in enumerate(perm):
        left[k] = basis[j]
    _set_rank1(dec, "weight", left, left.clone())
    rec = R.recover(dec, collector, [[j] for j in range(n)], n, p_act=[0.1, 0.1, 0.1, 0.1, 0.0], n_samples=50,
                    first_layer="weight")
    assert rec.summary()["input_purity"] == pytest.approx([1.0] * n, abs=1e-6)
    with pytest.raises(ValueError, match="first_layer must name a decomposed weight matrix with 4 input columns"):
        R.recover(dec, collector, [[j] for j in range(n)], n, p_act=[0.1] * 5, first_layer="bias")
    assert "input_purity" not in R.recover(dec, collector, [[0]], n, p_act=[0.1] * 5, n_samples=5).summary()
    assert rec.subnetwork_of == {j: k for j, k in enumerate(perm)}
    assert rec.impact_share == pytest.approx([1.0] * n, abs=1e-6)
    assert rec.dead == [4] and rec.live == [0, 1, 2, 3]
    assert rec.all_matched and rec.one_per_circuit
    assert rec.summary()["min_impact_share"] == pytest.approx(1.0, abs=1e-6)
    weights = dec.decoder_directions()["weight"]
    assert R.input_purity(weights, [[j] for j in range(n)], rec.matches) == pytest.approx([1.0] * n, abs=1e-6)


def test_scrambled_decomposition_has_low_impact_share():
    n = 4
    model = _diagonal_model(n)
    with torch.no_grad():
        model.weight.copy_(torch.eye(n))
    collector = l3d.GradientCollector(model, "weight")
    dec = l3d.Decomposition(collector.shapes, n_subnetworks=n, rank=1, seed=0)
    mixed = (torch.eye(n) + torch.eye(n).roll(1, dims=0)) / 2 ** 0.5   # each subnetwork spans two features
    _set_rank1(dec, "weight", mixed, mixed.clone())
    rec = R.recover(dec, collector, [[j] for j in range(n)], n, p_act=[0.1] * n, n_samples=200)
    assert all(0.3 < p < 0.7 for p in rec.impact_share)
    # the share of every subnetwork is split between exactly its two features
    assert torch.allclose(rec.share.sum(0), torch.ones(n, dtype=torch.float64))
    assert ((rec.share > 0.2).sum(0) == 2).all()
    weights = dec.decoder_directions()["weight"]                         # (C, out, in): half on each input
    assert R.input_purity(weights, [[j] for j in range(n)], rec.matches) == pytest.approx([0.5] * n, abs=1e-6)
    # a circuit of both inputs a subnetwork reads holds all of it; an unmatched circuit scores 0
    assert R.input_purity(weights, [[0, 1], [2]], [(0, 1)]) == pytest.approx([1.0, 0.0], abs=1e-6)


def test_groups_and_dead_subnetworks_are_counted():
    impact = torch.tensor([[5.0, 0.1, 4.0, 0.0], [0.2, 3.0, 0.1, 0.0]])   # 2 circuits, 4 subnetworks
    rec = R.recovery_from_impact(impact, p_act=[0.2, 0.3, 0.1, 0.0])
    assert rec.dead == [3] and rec.per_circuit == [2, 1]
    assert rec.all_matched and not rec.one_per_circuit
    assert rec.impact_share[1] == pytest.approx(3.0 / 3.1)
    with pytest.raises(ValueError, match="one value per subnetwork"):
        R.recovery_from_impact(impact, p_act=[0.1, 0.1])


def test_ordered_puts_matched_subnetworks_in_circuit_order_then_the_rest():
    impact = torch.tensor([[0.1, 0.2, 5.0, 0.0, 0.1], [3.0, 0.1, 0.2, 0.0, 0.1]])   # circuit 0 -> 2, circuit 1 -> 0
    rec = R.recovery_from_impact(impact, p_act=[0.2, 0.3, 0.1, 0.0, 0.1])
    order, labels = rec.ordered("x{}")
    assert order == [2, 0, 1, 3, 4]
    assert labels == ["subnetwork 2 (x0)", "subnetwork 0 (x1)", "subnetwork 1", "subnetwork 3 (dead)", "subnetwork 4"]



def test_ordered_subnetworks_from_plain_pairs_labels_matched_dead_and_the_rest():
    order, labels = R.ordered_subnetworks([(0, 3), (1, 0)], 5, "feature {}", dead=[4])
    assert order == [3, 0, 1, 2, 4]
    assert labels == ["subnetwork 3 (feature 0)", "subnetwork 0 (feature 1)", "subnetwork 1", "subnetwork 2",
                      "subnetwork 4 (dead)"]

def test_circuit_inputs_switch_on_only_their_features():
    x = R.circuit_inputs([[0, 1], [3]], n_features=5, n_samples=20, low=-1, high=1)
    assert x.shape == (2, 20, 5)
    assert (x[0][:, 2:] == 0).all() and (x[0][:, :2] != 0).all()
    assert (x[1][:, [0, 1, 2, 4]] == 0).all() and (x[1].abs() <= 1).all()
    with pytest.raises(ValueError, match="must lie in"):
        R.circuit_inputs([[7]], n_features=5)


def _two_layer_exact(n=4, seed=0):
    """ReLU MLP n → n → n with W1 = I, W2 = A, zero biases (f(x) = A x on x ≥ 0) and the exact decomposition."""
    torch.manual_seed(seed)
    A = 3 * torch.rand(n, n)
    model = MLP([n, n, n])
    with torch.no_grad():
        model.layers[0].weight.copy_(torch.eye(n))
        model.layers[1].weight.copy_(A)
        for layer in model.layers:
            layer.bias.zero_()
    collector = l3d.GradientCollector(model, ["layers.0.weight", "layers.1.weight"])
    dec = l3d.Decomposition(collector.shapes, n_subnetworks=n, rank=1, seed=seed)
    _set_rank1(dec, "layers.0.weight", torch.eye(n), torch.eye(n))
    _set_rank1(dec, "layers.1.weight", A.T / A.T.norm(dim=1, keepdim=True), torch.eye(n))
    return model, dec, A


def test_path_coefficients_of_exact_decomposition_give_true_coefficients():
    model, dec, A = _two_layer_exact()
    a_hat, reads = R.path_coefficients(model, dec, "layers.0.weight", "layers.1.weight")
    assert reads == [0, 1, 2, 3]
    torch.testing.assert_close(a_hat, A, rtol=1e-5, atol=1e-5)
    assert R.r_squared(a_hat, A) == pytest.approx(1.0, abs=1e-9)


def test_path_coefficients_of_scrambled_decomposition_are_wrong():
    model, dec, A = _two_layer_exact()
    i = dec.names.index("layers.1.weight")
    with torch.no_grad():   # every subnetwork's output side points at the next input's coefficients
        dec.decoder[i].factors[0].copy_(dec.decoder[i].factors[0].roll(1, dims=0))
    a_hat, _ = R.path_coefficients(model, dec, "layers.0.weight", "layers.1.weight")
    assert R.r_squared(a_hat, A) < 0.5


def test_r_squared_known_values():
    true = torch.tensor([1.0, 2.0, 3.0])
    assert R.r_squared(true, true) == 1.0
    assert R.r_squared(torch.full((3,), 2.0), true) == pytest.approx(0.0)


def test_squared_correlation_known_values():
    x = torch.tensor([1.0, 2.0, 3.0])
    assert R.squared_correlation(2 * x + 1, x) == pytest.approx(1.0)
    assert R.squared_correlation(torch.tensor([1.0, 3.0, 2.0]), x) == pytest.approx(0.25)


def test_selectivity_is_own_over_other_change():
    effect = torch.tensor([[4.0, 1.0, 1.0], [1.0, 2.0, 3.0]])
    own = torch.eye(3, dtype=torch.bool)[:2]
    assert R.intervention_selectivity(effect, own) == pytest.approx((4 / 1 + 2 / 2) / 2)
    with pytest.raises(ValueError, match="same shape"):
        R.intervention_selectivity(effect, own[:1])



def test_own_outputs_marks_each_groups_outputs():
    own = R.own_outputs([[2], [0, 3]], 4)
    assert own.dtype == torch.bool
    assert own.tolist() == [[False, False, True, False], [True, False, False, True]]

def test_circuit_aligned_error_is_zero_when_each_circuit_has_one_direction():
    torch.manual_seed(0)
    directions = torch.linalg.qr(torch.randn(6, 3)).Q.T              # 3 orthonormal directions in R^6
    active_circuits = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 0, 0]],
                                   dtype=torch.bool).repeat(4, 1)
    scale = torch.rand(active_circuits.shape[0], 3) + 0.5
    grads = (scale * active_circuits) @ directions
    error, found = R.circuit_aligned_error(grads, active_circuits)
    assert error < 1e-10
    assert torch.allclose((found @ directions.T).abs(), torch.eye(3), atol=1e-5)


def test_circuit_aligned_error_counts_what_one_direction_per_circuit_misses():
    # circuit 0's samples spread over two orthogonal directions equally: one direction explains half
    e = torch.eye(4)
    grads = torch.stack([e[0], e[1], e[0], e[1], e[2], 2 * e[2]])
    active_circuits = torch.tensor([[1, 0]] * 4 + [[0, 1]] * 2, dtype=torch.bool)
    error, _ = R.circuit_aligned_error(grads, active_circuits)
    assert abs(error - 2 / (4 + 5)) < 1e-6
    with pytest.raises(ValueError, match="only it is on"):
        R.circuit_aligned_error(grads, torch.tensor([[1, 1]] * 6, dtype=torch.bool))


def test_circuit_aligned_error_explains_a_sample_with_no_circuit_on_by_its_best_direction():
    # directions e0 (circuit 0) and e2 (circuit 1); the unlabelled sample 3 e0 + 2 e2 + 4 e3 keeps 4 + 16 of 29
    e = torch.eye(4)
    grads = torch.stack([e[0], e[2], 3 * e[0] + 2 * e[2] + 4 * e[3]])
    active_circuits = torch.tensor([[1, 0], [0, 1], [0, 0]], dtype=torch.bool)
    error, _ = R.circuit_aligned_error(grads, active_circuits)
    assert abs(error - 20 / (1 + 1 + 29)) < 1e-6


def test_fit_circuit_aligned_gives_every_circuit_its_own_subnetwork():
    # y = x on sparse inputs: trained with the labels, subnetwork j serves input j and only it
    n = 4
    model = _diagonal_model(n)
    with torch.no_grad():
        model.weight.copy_(torch.eye(n))
    collector = l3d.GradientCollector(model, "weight", divergence="mse")
    inputs = l3d.experiments.toys.sparse_features(400, n, 0.3, generator=torch.Generator().manual_seed(0),
                                                  drop_zero=True)
    dec = l3d.Decomposition(collector.shapes, n_subnetworks=n, rank=1, top_k=0.3, seed=0)
    errors = R.fit_circuit_aligned(dec, collector, inputs, inputs != 0, epochs=40, lr=0.05,
                                   lr_decay_every=10).reconstruction_error
    assert len(errors) == 40 and errors[-1] < 0.75 * errors[0]
    rec = R.recover(dec, collector, [[j] for j in range(n)], n, p_act=[0.1] * n, n_samples=100)
    assert rec.subnetwork_of == {j: j for j in range(n)}
    assert min(rec.impact_share) > 0.95
    # the decoders also hold the reference's side of each gradient (row r of column j), so not all is on column j
    weights = dec.decoder_directions()["weight"]
    assert min(R.input_purity(weights, [[j] for j in range(n)], rec.matches)) > 0.7
    with pytest.raises(ValueError, match=r"active_circuits must be \(n_inputs, n_subnetworks\) = \(400, 4\)"):
        R.fit_circuit_aligned(dec, collector, inputs, (inputs != 0)[:, :3], epochs=1)
    with pytest.raises(ValueError, match="batch_size must lie in 2..400"):
        R.fit_circuit_aligned(dec, collector, inputs, inputs != 0, epochs=1, batch_size=1000)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        R.fit_circuit_aligned(dec, collector, inputs, inputs != 0, epochs=0)


def test_fit_circuit_aligned_reads_the_old_keyword_active_with_a_warning_naming_the_new_one():
    collector = l3d.GradientCollector(_diagonal_model(3), "weight", divergence="mse")
    inputs = l3d.experiments.toys.sparse_features(64, 3, 0.3, generator=torch.Generator().manual_seed(0),
                                                  drop_zero=True)
    new, old = (l3d.Decomposition(collector.shapes, n_subnetworks=3, rank=1, top_k=0.3, seed=0) for _ in range(2))
    R.fit_circuit_aligned(new, collector, inputs, active_circuits=inputs != 0, epochs=2, batch_size=16)
    with pytest.warns(DeprecationWarning, match=r"fit_circuit_aligned\(active=...\) is deprecated, renamed "
                                                 r"active_circuits="):
        R.fit_circuit_aligned(old, collector, inputs, active=inputs != 0, epochs=2, batch_size=16)
    assert all(torch.equal(a, b) for a, b in zip(new.parameters(), old.parameters()))
    with pytest.raises(TypeError, match="active is the old name of active_circuits, give active_circuits only"):
        R.fit_circuit_aligned(old, collector, inputs, active=inputs != 0, active_circuits=inputs != 0, epochs=1)


def test_circuit_aligned_error_reads_the_old_keyword_active_with_a_warning():
    grads = torch.randn(40, 6, generator=torch.Generator().manual_seed(0))
    on = torch.zeros(40, 2, dtype=torch.bool)
    on[:20, 0], on[20:, 1] = True, True
    error, _ = R.circuit_aligned_error(grads, active_circuits=on)
    with pytest.warns(DeprecationWarning, match=r"circuit_aligned_error\(active=...\) is deprecated"):
        old, _ = R.circuit_aligned_error(grads, active=on)
    assert old == error


def test_evaluate_and_recover_is_evaluate_then_recover_with_its_p_act():
    collector = l3d.GradientCollector(_diagonal_model(3), "weight", divergence="mse")
    inputs = l3d.experiments.toys.sparse_features(64, 3, 0.3, generator=torch.Generator().manual_seed(0),
                                                  drop_zero=True)
    dec = l3d.Decomposition(collector.shapes, n_subnetworks=4, rank=1, top_k=0.3, seed=0)
    circuits = [[0], [1], [2]]
    source = l3d.GradientSource(collector, inputs, 16, chunk_size=64, seed=0)
    evaluation, found = R.evaluate_and_recover(dec, source, circuits, 3, n_samples=20, seed=2)
    source = l3d.GradientSource(collector, inputs, 16, chunk_size=64, seed=0)
    expected = l3d.evaluate(dec, source)
    assert evaluation == expected
    assert found.summary() == R.recover(dec, collector, circuits, 3, expected["p_act"], n_samples=20, seed=2).summary()


def test_aligned_then_paper_is_fit_circuit_aligned_then_fit_on_one_decomposition():
    model = _diagonal_model(3)
    collector = l3d.GradientCollector(model, "weight", divergence="mse")
    inputs = l3d.experiments.toys.sparse_features(64, 3, 0.3, generator=torch.Generator().manual_seed(0),
                                                  drop_zero=True)
    active_circuits = inputs != 0

    def run(stepwise):
        source = l3d.GradientSource(collector, inputs, 16, chunk_size=64, seed=0)
        dec = l3d.Decomposition(collector.shapes, n_subnetworks=3, rank=1, top_k=0.3, seed=0)
        if stepwise:
            R.fit_circuit_aligned(dec, collector, inputs, active_circuits, 4, lr_decay_every=2, batch_size=16, seed=1)
            first = dec.decoder_directions()["weight"].clone()
            l3d.fit(dec, source, 4, lr_decay_every=2, progress=False)
            return first, dec
        stages = []
        for stage, d in R.aligned_then_paper(dec, source, active_circuits, 4, lr_decay_every=2, batch_size=16, seed=1):
            assert d is dec
            stages.append(stage)
            if stage == "aligned":
                first = dec.decoder_directions()["weight"].clone()
        assert stages == ["aligned", "aligned_then_paper"]
        return first, dec

    (first_a, dec_a), (first_b, dec_b) = run(True), run(False)
    assert torch.equal(first_a, first_b)
    assert torch.equal(dec_a.decoder_directions()["weight"], dec_b.decoder_directions()["weight"])
    assert not torch.equal(first_a, dec_a.decoder_directions()["weight"])


def test_low_rank_r2_is_one_for_a_low_rank_matrix_plus_an_offset():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(8, 3, generator=g) @ torch.randn(3, 9, generator=g) + 2.5
    assert R.low_rank_r2(a, 3) == pytest.approx(1.0, abs=1e-9)
    assert R.low_rank_r2(a, 2) < 0.99


def test_low_rank_r2_bounds_every_low_rank_matrix_and_is_reached():
    g = torch.Generator().manual_seed(1)
    a = 3 * torch.rand(10, 10, generator=g)
    ceiling = R.low_rank_r2(a, 5)

    def r2(m):
        return R.squared_correlation(m, a)

    u, s, vh = torch.linalg.svd(a)
    truncated = u[:, :5] @ torch.diag(s[:5]) @ vh[:5]          # Eckart–Young without an offset
    assert r2(truncated) <= ceiling + 1e-9
    for _ in range(50):                                        # random rank-5 matrices never beat it
        assert r2(torch.randn(10, 5, generator=g) @ torch.randn(5, 10, generator=g)) <= ceiling + 1e-9
    brute = max(1 - torch.linalg.svdvals(a.double() - c)[5:].pow(2).sum().item() / (a - a.mean()).pow(2).sum().item()
                for c in torch.linspace(0, 3, 3001).tolist())
    assert ceiling == pytest.approx(brute, abs=1e-5)
    assert R.low_rank_r2(a, 10) == 1.0
    with pytest.raises(ValueError, match="rank"):
        R.low_rank_r2(a, 0)


def test_perfect_recovery_up_to_scale_sign_and_order_is_one():
    torch.manual_seed(0)
    weights = torch.randn(4, 3)
    slices = torch.randn(6, 4, 3)   # 6 subnetworks, unrelated except where planted below
    for k, i in [(5, 0), (2, 1), (0, 2), (3, 3)]:
        slices[k, i] = -2.5 * weights[i]
    assert mmcs(slices, weights) == pytest.approx(1.0)


def test_hand_computed_value():
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    slices = torch.tensor([
        [[1.0, 1.0], [0.0, 0.0]],     # feature 0: cos 1/√2; feature 1: zero slice → cos 0
        [[0.0, 1.0], [-1.0, 3.0]],    # feature 0: cos 0;    feature 1: |cos| 3/√10
    ])
    assert mmcs(slices, weights) == pytest.approx((1 / math.sqrt(2) + 3 / math.sqrt(10)) / 2)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match=r"\(C, F, D\)"):
        mmcs(torch.zeros(2, 3, 4), torch.zeros(3, 5))


def test_own_paths_are_each_inputs_active_path_unit_normed():
    torch.manual_seed(0)
    toy = circuit_superposition(4, 3, "authors")   # y = ReLU(W_out W_in x + b)
    with torch.no_grad():
        toy.layers[-1].bias.copy_(torch.tensor([5.0, -5.0, 5.0, -5.0]))   # outputs 0, 2 on, 1, 3 off
    W = (toy.layers[1].weight @ toy.layers[0].weight).detach().double()           # (out, in)
    on = (W + toy.layers[1].bias.detach().double()[:, None]) > 0                  # ReLU on at x = e_j
    paths = R.own_paths(toy, 4)
    assert paths.shape == (4, 4, 4)
    for j in range(4):
        column = torch.where(on[:, j], W[:, j], torch.zeros_like(W[:, j]))
        torch.testing.assert_close(paths[j, :, j], column / column.norm(), rtol=1e-6, atol=1e-7)
        assert not paths[j][:, [i for i in range(4) if i != j]].any()
    assert not on.all()                                                           # the mask mattered
    # the paper's number of a decomposition that is exactly these paths is that of the true columns it reads
    A = torch.rand(4, 4) * 3
    assert R.paper_r(R.own_paths(toy, 4), A) == pytest.approx(R.paper_r(paths, A))
