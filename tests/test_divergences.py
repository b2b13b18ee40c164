"""Divergences and reference outputs against their definitions."""
import pytest
import torch

import l3d
from l3d.divergences import divergence, random_others, reference_index


def test_divergences_match_formulas():
    torch.manual_seed(0)
    y, r = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    torch.testing.assert_close(divergence(y, r, "mse"), ((y - r) ** 2).sum(-1))
    p, q = r.softmax(-1), y.softmax(-1)
    torch.testing.assert_close(divergence(y, r, "kl"), (p * (p / q).log()).sum(-1))
    assert divergence(y, y, "kl").abs().max() < 1e-12
    with pytest.raises(ValueError, match="unknown divergence"):
        divergence(y, r, "l1")


def test_references_follow_their_definitions():
    torch.manual_seed(0)
    out = torch.randn(50, 4, dtype=torch.float64)
    for _ in range(5):
        idx = random_others(50, torch.Generator().manual_seed(_))
        assert (idx != torch.arange(50)).all()
    random = l3d.reference_outputs(out, "mse", "random", torch.Generator().manual_seed(0))
    # each reference is some other sample's output
    same = (random[:, None, :] == out[None]).all(-1)
    assert same.sum(1).eq(1).all() and not same.diagonal().any()
    torch.testing.assert_close(l3d.reference_outputs(out, "mse", "mean"), out.mean(0).expand(50, 4))
    mixture = l3d.reference_outputs(out, "kl", "mean").exp()
    torch.testing.assert_close(mixture[0], out.softmax(-1).mean(0))
    uniform = l3d.reference_outputs(out, "kl", "uniform").softmax(-1)
    torch.testing.assert_close(uniform, torch.full_like(out, 0.25))



def test_reference_errors():
    out = torch.randn(4, 3)
    with pytest.raises(ValueError, match="at least 2 samples"):
        l3d.reference_outputs(out[:1], "mse", "random")
    with pytest.raises(ValueError, match="needs divergence='kl'"):
        l3d.reference_outputs(out, "mse", "uniform")
    with pytest.raises(ValueError, match="unknown reference"):
        l3d.reference_outputs(out, "mse", "median")
    # a reference sample drawn by index: only for the drawn kinds, never a silent "random" for another
    assert reference_index(4, "random_or_self", torch.Generator().manual_seed(0)).shape == (4,)
    with pytest.raises(ValueError, match=r"reference one of \['random', 'random_or_self'\], got 'mean'"):
        reference_index(4, "mean")
