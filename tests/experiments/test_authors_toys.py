"""The authors' toys beside the paper's-text ones, their conventions, and the paper's TMCS metric."""
import numpy as np
import pytest
import torch

import l3d
from l3d.experiments import toys
from l3d.experiments.ground_truth import decoder_paths, paper_coefficients, paper_r


def test_build_gives_each_variant():
    torch.manual_seed(0)
    shapes = {(toy, variant): {n: tuple(p.shape) for n, p in toys.build(toy, variant).named_parameters()}
              for toy in toys.TOYS for variant in toys.VARIANTS}
    assert shapes["tmcs", "authors"] == {"layers.0.weight": (5, 10), "layers.1.weight": (10, 5), "layers.1.bias": (10,)}
    assert shapes["tmcs", "paper_text"] == {"layers.0.weight": (5, 10), "layers.0.bias": (5,),
                                            "layers.1.weight": (10, 5), "layers.1.bias": (10,)}
    assert shapes["high_rank", "authors"]["layers.0.weight"] == (10, 30)
    assert shapes["high_rank", "paper_text"]["layers.0.weight"] == (10, 25)
    assert list(shapes["square", "authors"]) == [f"layers.{i}.{t}" for i in range(5) for t in ("weight", "bias")]
    assert ([shapes["square", "authors"][f"layers.{i}.weight"] for i in range(5)]
            == [(10, 5), (10, 10), (10, 10), (10, 10), (5, 10)])
    assert shapes["square", "paper_text"]["layers.0.weight"] == (5, 5)
    assert toys.build("high_rank", "authors", n_features=15, n_hidden=4).sizes == [15, 4, 15]
    with pytest.raises(ValueError, match="unknown toy 'tms'"):
        toys.build("tms")
    with pytest.raises(ValueError, match="unknown toy variant 'code'"):
        toys.build("tmcs", "code")


def test_authors_tmcs_forward_is_relu_of_linear_path_plus_bias():
    torch.manual_seed(0)
    model = toys.build("tmcs", "authors")
    W_in, W_out = model.layers[0].weight.detach().T, model.layers[1].weight.detach().T   # their (in, h), (h, out)
    b = torch.randn(10)
    with torch.no_grad():
        model.layers[1].bias.copy_(b)
    x = torch.rand(20, 10)
    torch.testing.assert_close(model(x), torch.relu(x @ W_in @ W_out + b))
    assert (model(-x) == 0).any()                               # the ReLU is on the output
    # their init: N(0, 1) weights (no Xavier), b = 0
    fresh = toys.build("high_rank", "authors", n_features=200, n_hidden=100)
    assert abs(fresh.layers[0].weight.std().item() - 1) < 0.05 and fresh.layers[1].bias.abs().max() == 0


def test_authors_square_forward_and_initialization():
    torch.manual_seed(0)
    model = toys.build("square", "authors")
    x = torch.rand(8, 5) * 2 - 1
    h = x
    for layer in model.layers:                                  # ELU after every layer, the output's included
        h = torch.nn.functional.elu(h @ layer.weight.T + layer.bias)
    torch.testing.assert_close(model(x), h)
    assert (model(x) > -1).all()                                 # ELU output
    biases = torch.cat([layer.bias.detach() for layer in model.layers])
    assert biases.min() >= 0.01 and biases.max() <= 1 and biases.max() - biases.min() > 0.5
    wide = toys.build("square", "authors", width=400)
    assert abs(wide.layers[1].weight.std().item() - (2 / 400) ** 0.5) < 0.003    # He normal, fan_in
    text = toys.build("square", "paper_text")
    torch.testing.assert_close(text(x), text.layers[-1](torch.nn.functional.gelu(text.layers[-2](
        torch.nn.functional.gelu(text.layers[-3](torch.nn.functional.gelu(text.layers[-4](
            torch.nn.functional.gelu(text.layers[0](x))))))))))


def test_authors_conventions_and_per_tensor_ranks():
    c = toys.AUTHORS_CONVENTIONS
    assert (c.divergence, c.reference, c.reference_pool, c.drop_zero_inputs) == (
        "output_times_residual", "random_or_self", "batch", True)
    assert c.warm_start_epochs == {"tmcs": 2, "high_rank": 1, "square": 11}
    assert (c.toy_weight_decay, c.toy_batch_size) == (1e-3, 128)
    model = toys.build("square", "authors")
    ranks = toys.weight_bias_ranks({n: tuple(p.shape) for n, p in model.named_parameters()}, weight=2, bias=1)
    assert ranks["layers.0.weight"] == 2 and ranks["layers.4.bias"] == 1
    decomposition = l3d.Decomposition({n: tuple(p.shape) for n, p in model.named_parameters()}, 5, rank=ranks)
    assert decomposition.ranks["layers.2.weight"] == (2, 2) and decomposition.ranks["layers.2.bias"] == (1,)


def test_decoder_paths_are_the_product_of_a_subnetworks_own_directions():
    torch.manual_seed(0)
    model = toys.build("tmcs", "authors")
    decomposition = l3d.Decomposition({n: tuple(p.shape) for n, p in model.named_parameters()}, 3, rank=1)
    directions = decomposition.decoder_directions()
    paths = decoder_paths(decomposition)
    assert paths.shape == (3, 10, 10)
    for k in range(3):
        d_in, d_out = directions["layers.0.weight"][k].detach(), directions["layers.1.weight"][k].detach()
        torch.testing.assert_close(paths[k], d_out @ d_in)
        torch.testing.assert_close(paths[k].T, d_in.T @ d_out.T)     # their W_in @ W_out, (in, out)
    with pytest.raises(ValueError, match="must be a decomposed weight matrix"):
        decoder_paths(decomposition, "layers.1.bias")


def test_paper_r_on_a_constructed_case():
    torch.manual_seed(0)
    A = 3 * torch.rand(4, 6)                                            # true coefficients (n_out, n_in)
    picked = [5, 0, 2, 2, 3]                                    # input of each subnetwork (2 twice, 1 and 4 never)
    scale = [1.0, 2.0, 0.5, 1.0, 1.5]
    noise = torch.randn(5, 4)
    paths = torch.zeros(5, 4, 6)
    for k, j in enumerate(picked):
        paths[k, :, j] = scale[k] * (A[:, j] + noise[k])
        paths[k, :, (j + 1) % 6] = 0.01                                   # a small leak, never the largest column
    columns, inputs = paper_coefficients(paths)
    assert inputs == picked
    torch.testing.assert_close(columns, paths[torch.arange(5), :, picked])
    expected = np.corrcoef(np.concatenate([(scale[k] * (A[:, j] + noise[k])).numpy() for k, j in enumerate(picked)]),
                           np.concatenate([A[:, j].numpy() for j in picked]))[0, 1]
    assert paper_r(paths, A) == pytest.approx(expected, abs=1e-6)
    assert -1 < paper_r(paths, A) < 0.99
    exact = torch.zeros(5, 4, 6)
    for k, j in enumerate(picked):
        exact[k, :, j] = -A[:, j]                                         # one sign for all: r = -1 (r, not r²)
    assert paper_r(exact, A) == pytest.approx(-1.0)
    assert paper_r(-exact, A) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="paths must be"):
        paper_r(paths, A.T)
