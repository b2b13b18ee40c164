"""Choosing tensors by name or glob."""
import pytest
from torch import nn

import l3d


def model():
    return nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1)))


def test_names_and_globs_in_model_order():
    m = model()
    assert list(l3d.select_tensors(m, "2.*.weight")) == ["2.0.weight", "2.1.weight"]
    assert list(l3d.select_tensors(m, ["2.1.bias", "0.weight"])) == ["0.weight", "2.1.bias"]
    assert list(l3d.select_tensors(m, ["*", "0.weight"])) == [n for n, _ in m.named_parameters()]
    assert l3d.select_tensors(m, "0.bias")["0.bias"] is m[0].bias


def test_unknown_name_lists_the_available_names():
    with pytest.raises(ValueError) as error:
        l3d.select_tensors(model(), "2.0.wieght")
    message = str(error.value)
    assert "'2.0.wieght'" in message and "Did you mean: 2.0.weight" in message
    for name, _ in model().named_parameters():
        assert name in message
    with pytest.raises(ValueError, match="no tensors chosen"):
        l3d.select_tensors(model(), [])


def test_tensors_without_entries_are_refused():
    m = nn.Sequential(nn.Linear(0, 3), nn.Linear(3, 2))
    with pytest.raises(ValueError, match=r"tensors: '0\.weight' \(shape \(3, 0\)\) has no entries"):
        l3d.select_tensors(m, "*")
    assert list(l3d.select_tensors(m, ["0.bias", "1.*"])) == ["0.bias", "1.weight", "1.bias"]
