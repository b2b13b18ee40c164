"""The toy models, their data and the (stacked) toy trainer."""
import math
import os
import shutil

import pytest
import torch

import l3d
import l3d.experiments.toys
from l3d.experiments import toys
from l3d.experiments.toys import TMS, sparse_features, tms_feature_match, train_toy, train_toys


def test_sparse_features():
    x = sparse_features(4000, 5, p_active=0.05, low=-1.0, high=1.0, generator=torch.Generator().manual_seed(0))
    assert x.shape == (4000, 5)
    assert (x != 0).any(1).all()                  # all-zero samples dropped
    assert x.min() >= -1 and x.max() <= 1 and (x < 0).any()
    # P(active | not all zero) = p / (1 - (1 - p)^5)
    expected = 0.05 / (1 - 0.95 ** 5)
    assert abs((x != 0).float().mean().item() - expected) < 0.02


def test_untied_tms_computes_the_same_function():
    torch.manual_seed(0)
    tied = TMS(6, 3)
    with torch.no_grad():
        tied.b.normal_()
    untied = tied.untied()
    assert sorted(n for n, _ in untied.named_parameters()) == ["W_in", "W_out", "b"]
    x = torch.rand(10, 6)
    torch.testing.assert_close(untied(x), tied(x))


@pytest.mark.parametrize("layout", toys.LAYOUTS)
def test_both_layouts_compute_relu_of_the_product_with_identity_hidden_layers(layout):
    torch.manual_seed(0)
    W, b, x = torch.randn(2, 5), torch.randn(5), torch.rand(7, 5)
    model = TMS.from_weights(W, b, layout=layout)
    torch.testing.assert_close(model(x), torch.relu(x @ W.T @ W + b))
    torch.testing.assert_close(model.weight_in(), W)
    torch.testing.assert_close(model.weight_out(), W.T)
    torch.testing.assert_close(model.bias(), b)
    deeper = model.with_identity().with_identity()
    assert len(deeper.hidden_weights()) == 2 and all(torch.equal(h, torch.eye(2)) for h in deeper.hidden_weights())
    torch.testing.assert_close(deeper(x), model(x))
    with torch.no_grad():
        deeper.hidden_weights()[0].mul_(2.0)   # a hidden layer counts: H_2 H_1 between W_in and W_out
    torch.testing.assert_close(deeper(x), torch.relu(2 * x @ W.T @ W + b))
    torch.testing.assert_close(deeper.untied()(x), deeper(x))


def test_the_layouts_name_the_tensors_as_notebooks_01_and_07_do():
    matrices = TMS(5, 2, tied=False, n_hidden_layers=1)
    linear = TMS(5, 2, tied=False, n_hidden_layers=1, layout="linear")
    assert [n for n, _ in matrices.named_parameters()] == ["W_in", "W_out", "b", "hidden.0"]
    assert [n for n, _ in linear.named_parameters()] == ["linear1.weight", "hidden_layers.0.weight",
                                                         "linear2.weight", "linear2.bias"]
    assert [n for n, _ in TMS(5, 2).named_parameters()] == ["W_in", "b"]   # tied: W_out is W_inᵀ
    tied = TMS(5, 2, n_hidden_layers=1).with_identity()
    assert tied.tied and [n for n, _ in tied.named_parameters()] == ["W_in", "b", "hidden.0", "hidden.1"]
    with pytest.raises(ValueError, match="layout='linear' holds W_out in linear2"):
        TMS(5, 2, layout="linear")
    with pytest.raises(ValueError, match="unknown TMS layout 'spd'"):
        TMS(5, 2, layout="spd")


def reference_training(model, x, epochs, batch_size, lr, seed):
    """The plain loop: one model, AdamW, shuffled batches, MSE summed over outputs and averaged over the batch."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(x.shape[0], generator=generator).split(batch_size):
            loss = (model(x[idx]) - x[idx]).pow(2).sum(-1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


NO_COMPILER = shutil.which(os.environ.get("CXX", "g++")) is None


@pytest.mark.parametrize("compile", [False, pytest.param(True, marks=pytest.mark.skipif(
    NO_COMPILER, reason="torch.compile needs a C++ compiler"))], ids=["eager", "compiled"])
def test_stacked_training_equals_training_each_model_alone(compile):
    # compiled: the full batches' step reads the weights as untracked views of the one flat tensor AdamW updates;
    # 100 samples in batches of 32 also take the uncompiled step (the last batch of 4)
    torch.manual_seed(0)
    models = [TMS(5, 2) for _ in range(3)]
    alone = [TMS(5, 2) for _ in range(3)]
    for a, m in zip(alone, models):
        a.load_state_dict(m.state_dict())
    data = [sparse_features(100, 5, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    losses = train_toys(models, data, data, epochs=3, batch_size=32, lr=0.01, seeds=[4, 5, 6], compile=compile,
                        progress=False)
    for a, x, s in zip(alone, data, [4, 5, 6]):
        reference_training(a, x, 3, 32, 0.01, s)
    for a, m in zip(alone, models):
        for (_, p), (_, q) in zip(a.named_parameters(), m.named_parameters()):
            torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
    assert len(losses) == 3 and len(losses[0]) == 3
    single = TMS(5, 2)
    assert len(train_toy(single, data[0], data[0], epochs=2, progress=False)) == 2


def test_training_errors_are_explained():
    with pytest.raises(ValueError, match="one inputs and one targets"):
        train_toys([TMS()], [], [], epochs=1)
    with pytest.raises(ValueError, match="same number of samples"):
        train_toys([TMS(), TMS()], [torch.rand(4, 5), torch.rand(5, 5)], [torch.rand(4, 5), torch.rand(5, 5)], epochs=1)


def test_feature_match_recovers_planted_subnetworks():
    torch.manual_seed(0)
    model = TMS(4, 2).untied()
    C, perm = 5, [3, 0, 4, 1]   # feature i lives in subnetwork perm[i]; subnetwork 2 is noise
    W_in = 0.01 * torch.randn(C, 2, 4)
    for i, k in enumerate(perm):
        W_in[k, :, i] = -3 * model.W_in.detach()[:, i]
    found = tms_feature_match(model, {"W_in": W_in})
    assert found["pairs"] == list(enumerate(perm))
    assert min(found["cosines"]) > 0.999
    assert found["cos"].shape == (4, 5) and found["share"].shape == (4, 5)


def test_best_of_restarts_keeps_the_lowest_final_loss():
    data = [(x, x) for x in (sparse_features(64, 5, generator=torch.Generator().manual_seed(s)) for s in (0, 1))]
    models, losses = l3d.experiments.toys.train_toys_best_of(lambda: TMS(5, 2), data, seeds=[3, 4], restarts=3,
                                                 epochs=2, batch_size=16, progress=False)
    assert len(models) == 2 and len(losses) == 2 and len(losses[0]) == 2
    # restart 0 of seed 3 is the model torch.manual_seed(3) gives; the kept one can do no worse than it
    torch.manual_seed(3)
    plain = TMS(5, 2)
    alone = train_toys([plain], [data[0][0]], [data[0][1]], epochs=2, batch_size=16, seeds=[3], progress=False)
    assert losses[0][-1] <= alone[0][-1] + 1e-6


def test_sparse_features_can_keep_all_zero_samples():
    x = sparse_features(4000, 5, p_active=0.05, generator=torch.Generator().manual_seed(0), drop_zero=False)
    assert x.shape == (4000, 5) and x.min() >= 0 and x.max() <= 1
    assert abs((x == 0).all(1).float().mean().item() - 0.95 ** 5) < 0.03   # all-zero samples stay
    assert abs((x != 0).float().mean().item() - 0.05) < 0.01


def test_sparse_features_refuses_what_would_need_astronomically_many_draws_or_give_only_zeros():
    import l3d.experiments.toys as toys

    with pytest.raises(ValueError, match=r"p_active=1e-09 with 5 features makes a nonzero sample 1 in 2e\+08 draws: "
                                         r"drop_zero=True would draw about 2e\+09 samples"):
        sparse_features(10, 5, 1e-9)   # used to loop for hours
    assert sparse_features(10, 5, 1e-9, drop_zero=False).abs().sum() == 0   # without drop_zero: cheap, all zero
    # at the bounds: q = 1 − (1 − p)^n samples kept; n_samples / q ≤ MAX_DRAWS and 1 / q ≤ MAX_ROUNDS are drawn
    q = 1 / toys.MAX_ROUNDS
    p = 1 - (1 - q) ** (1 / 5)
    with pytest.raises(ValueError, match="rounds"):
        sparse_features(1, 5, p * 0.99)
    x = sparse_features(2, 5, 2e-4, generator=torch.Generator().manual_seed(0))   # 1 in ~1000: drawn, bounded
    assert x.shape == (2, 5) and (x != 0).any(1).all()
    with pytest.raises(ValueError, match=r"low = high = 0 makes every value, so every sample, zero"):
        sparse_features(10, 5, 0.5, low=0.0, high=0.0)
    assert sparse_features(3, 5, 0.5, low=0.0, high=0.0, drop_zero=False).abs().sum() == 0
    with pytest.raises(ValueError, match=r"low and high must be finite numbers"):
        sparse_features(10, 5, 0.5, high=math.inf)


def test_group_features_switch_groups_together():
    g = torch.Generator().manual_seed(0)
    x = toys.group_features(2000, n_groups=5, group_size=3, p_active=0.1, generator=g)
    assert x.shape == (2000, 15)
    on = (x > 0).view(2000, 5, 3)
    assert (on.all(2) == on.any(2)).all()          # a group is wholly on or wholly off
    assert on.any(2).any(1).all()                  # no all-zero sample
    assert 0.2 < on.any(2).float().mean() < 0.3     # p / (1 − (1 − p)^5) ≈ 0.24: empty samples are redrawn
    assert x.max() <= 1 and x.min() >= 0
    assert toys.feature_groups(2, 3) == [[0, 1, 2], [3, 4, 5]]


def test_group_features_can_keep_all_zero_samples():
    g = torch.Generator().manual_seed(0)
    x = toys.group_features(4000, n_groups=5, group_size=3, p_active=0.05, generator=g, drop_zero=False)
    on = (x > 0).view(4000, 5, 3)
    assert (on.all(2) == on.any(2)).all()                                     # groups still switch together
    assert abs((~on.any(2).any(1)).float().mean().item() - 0.95 ** 5) < 0.03   # all-zero samples stay
    assert abs(on.any(2).float().mean().item() - 0.05) < 0.01                  # each group on with p_active


def test_models_have_the_papers_shapes():
    tmcs = toys.circuit_superposition(variant="paper_text")
    assert [tuple(p.shape) for p in tmcs.parameters()] == [(5, 10), (5,), (10, 5), (10,)]
    square = toys.square_mlp(variant="paper_text")
    assert len(square.layers) == 5 and all(layer.weight.shape == (5, 5) for layer in square.layers)
    assert toys.high_rank_circuits(variant="paper_text")(torch.zeros(3, 25)).shape == (3, 25)
    with pytest.raises(ValueError, match="activation"):
        toys.MLP([2, 2], "tanh")


def test_train_toy_fits_square_targets():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    x = toys.sparse_features(512, 5, p_active=0.2, low=-1, high=1, generator=g)
    model = toys.square_mlp(variant="paper_text")
    losses = toys.train_toy(model, x, x ** 2, epochs=30, batch_size=64, lr=1e-2, progress=False)
    assert losses[-1] < 0.5 * losses[0]
