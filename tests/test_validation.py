"""Bad input fails before any work starts, with a message saying what is wrong and what would be right."""
import math

import pytest
import torch
from torch import nn

import l3d
from l3d.experiments.toys import TMS
from l3d.runtime.distributed import Shard


def mlp():
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3))


# --- tensor names -------------------------------------------------------------------------------------
def test_unknown_tensor_name_lists_near_matches():
    with pytest.raises(ValueError, match=r"no parameter of Sequential matches '0\.wieght'\. Did you mean: 0\.weight"):
        l3d.select_tensors(mlp(), ["0.wieght"])


def test_glob_matching_nothing_is_an_error():
    with pytest.raises(ValueError,
                       match=r"matches 'h\.\*'.*Available parameters: 0\.weight, 0\.bias, 2\.weight, 2\.bias"):
        l3d.select_tensors(mlp(), "h.*")


def test_bare_module_name_is_ambiguous():
    with pytest.raises(ValueError, match=r"'2' names a module of Sequential, not a parameter tensor: "
                                         r".*\(2\.weight, 2\.bias\) or all of them with '2\.\*'"):
        l3d.GradientCollector(mlp(), ["0.*", "2"])


def test_tensor_names_must_be_strings():
    with pytest.raises(TypeError, match=r"must be strings, got \[0\]"):
        l3d.select_tensors(mlp(), ["0.weight", 0])


def test_globs_choose_tensors_in_model_order():
    assert list(l3d.select_tensors(mlp(), ["2.*", "0.bias"])) == ["0.bias", "2.weight", "2.bias"]


# --- ranks, k, number of subnetworks --------------------------------------------------------------------
def test_int_rank_caps_per_mode_so_small_kernels_stay_full():
    shapes = {"conv": (16, 1, 3, 3), "bias": (16,)}
    assert l3d.Decomposition(shapes, 2, rank=10).ranks == {"conv": (10, 1, 3, 3), "bias": (10,)}


def test_int_rank_above_every_dimension_is_an_error():
    with pytest.raises(ValueError, match=r"rank 6 exceeds every dimension of every tensor \(largest 5\): "
                                         r"use a rank of at most 5"):
        l3d.Decomposition({"W": (2, 5), "b": (5,)}, 3, rank=6)


def test_per_tensor_rank_above_its_dimensions_is_an_error():
    with pytest.raises(ValueError, match=r"rank 6 for tensor 'b' exceeds every dimension of its shape \(5,\): "
                                         r"use a rank of at most 5"):
        l3d.Decomposition({"W": (20, 5), "b": (5,)}, 3, rank={"W": 6, "b": 6})
    with pytest.raises(ValueError, match=r"rank 3 of mode 0 is outside 1\.\.2 for a tensor of shape \(2, 5\)"):
        l3d.Decomposition({"W": (2, 5), "b": (5,)}, 3, rank={"W": (3, 3), "b": 2})
    with pytest.raises(ValueError, match=r"rank dict names tensors \['c'\] that are not decomposed"):
        l3d.Decomposition({"W": (2, 5)}, 3, rank={"W": 1, "c": 1})


@pytest.mark.parametrize("k", [0, -0.1, 1.5, math.nan])
def test_top_k_outside_0_1_is_an_error(k):
    with pytest.raises(ValueError, match=r"top_k is the fraction of coefficients kept and must lie in \(0, 1\]"):
        l3d.Decomposition({"W": (2, 5)}, 3, top_k=k)
    with pytest.raises(ValueError, match=r"must lie in \(0, 1\]"):
        l3d.batch_top_k(torch.randn(4, 3), k)


@pytest.mark.parametrize("c", [0, -1])
def test_fewer_than_one_subnetwork_is_an_error(c):
    with pytest.raises(ValueError, match=r"n_subnetworks must be at least 1"):
        l3d.Decomposition({"W": (2, 5)}, c)


# --- data and divergence ---------------------------------------------------------------------------------
def tms_collector(**kw):
    return l3d.GradientCollector(TMS().untied(), ["W_in", "W_out", "b"], **kw)


def test_batch_larger_than_data_set_is_an_error():
    with pytest.raises(ValueError, match=r"batch_size 33 must be an int in 1\.\.32 \(the number of inputs\)"):
        l3d.GradientSource(tms_collector(), torch.rand(32, 5), 33)


def test_batch_must_split_over_processes():
    with pytest.raises(ValueError, match=r"batch_size 16 must be a multiple of the 3 processes"):
        l3d.GradientSource(tms_collector(), torch.rand(32, 5), 16, shard=Shard(0, 3))


def test_random_reference_needs_two_items_per_chunk():
    with pytest.raises(ValueError, match=r"use chunk_size >= 2"):
        l3d.GradientSource(tms_collector(), torch.rand(32, 5), 1)


class Head(nn.Module):
    def __init__(self, n_out, probabilities=False):
        super().__init__()
        self.lin = nn.Linear(4, n_out)
        self.probabilities = probabilities

    def forward(self, x):
        y = self.lin(x)
        return y.softmax(-1) if self.probabilities else y


def test_kl_needs_logits_over_two_or_more_classes():
    collector = l3d.GradientCollector(Head(1), "lin.*", divergence="kl")
    with pytest.raises(ValueError, match=r"divergence='kl' needs logits over at least 2 classes .* shape \(8, 1\); "
                                         r"use divergence='mse'"):
        l3d.GradientSource(collector, torch.randn(8, 4), 4)


def test_kl_refuses_probabilities():
    collector = l3d.GradientCollector(Head(3, probabilities=True), "lin.*", divergence="kl")
    with pytest.raises(ValueError, match=r"divergence='kl' takes logits, but the model's outputs are probabilities"):
        l3d.GradientSource(collector, torch.randn(8, 4), 4)
    with pytest.raises(ValueError, match=r"are probabilities"):  # also when gradients are asked for directly
        collector(torch.randn(8, 4))


def test_non_finite_outputs_are_an_error():
    inputs = torch.randn(8, 4)
    inputs[3, 1] = math.inf
    with pytest.raises(ValueError, match=r"the model's outputs contain nan or inf"):
        l3d.GradientSource(l3d.GradientCollector(Head(3), "lin.*"), inputs, 4)


# --- a decomposition against a model with other tensors -----------------------------------------------------
def test_loading_against_a_model_with_other_shapes_is_refused(tmp_path):
    decomposition = l3d.Decomposition({"W_in": (2, 5), "W_out": (5, 2), "b": (5,)}, 3, seed=0)
    decomposition.save(tmp_path)
    wider = l3d.GradientCollector(TMS(6, 2).untied(), ["W_in", "W_out", "b"])
    with pytest.raises(ValueError,
                       match=r"does not fit the model's tensors: W_in: decomposition \(2, 5\), the model \(2, 6\)"):
        l3d.Decomposition.load(tmp_path, shapes=wider.shapes)
    fewer = l3d.GradientCollector(TMS().untied(), ["W_in", "b"])
    with pytest.raises(ValueError, match=r"only in the decomposition: \['W_out'\]"):
        l3d.Decomposition.load(tmp_path, shapes=fewer.shapes)
    source = l3d.GradientSource(wider, torch.rand(16, 6), 8)
    with pytest.raises(ValueError, match=r"does not fit the collector's tensors"):
        l3d.fit(decomposition, source, 1, progress=False)
    same = l3d.GradientCollector(TMS().untied(), ["W_in", "W_out", "b"])
    assert l3d.Decomposition.load(tmp_path, shapes=same.shapes).config == decomposition.config


# --- fit settings and notebook parameters --------------------------------------------------------------------
def test_fit_settings_are_checked_together():
    collector = tms_collector()
    source = l3d.GradientSource(collector, torch.rand(16, 5), 8)
    decomposition = l3d.Decomposition(collector.shapes, 3)
    with pytest.raises(ValueError) as info:
        l3d.fit(decomposition, source, 0, lr=-1.0, lr_decay=1.5, lr_decay_every=0, warm_start_epochs=-1,
                checkpoint_every=0, progress=False, silence=-0.5, silence_from=-1)
    message = str(info.value)
    for part in ["epochs must be >= 1, got 0", "lr must be > 0, got -1.0", "lr_decay must be > 0 and <= 1, got 1.5",
                 "lr_decay_every must be >= 1", "warm_start_epochs must be >= 0", "checkpoint_every must be >= 1",
                 "silence must be >= 0, got -0.5", "silence_from must be >= 0"]:
        assert part in message
    with pytest.raises(ValueError, match=r"resume and checkpoint_every need a checkpoint_dir"):
        l3d.fit(decomposition, source, 1, resume=True, progress=False)
