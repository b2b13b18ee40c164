"""Mean max cosine similarity between subnetwork slices and the model's feature weights."""
import math

import pytest
import torch

from l3d.recovery import mmcs


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
