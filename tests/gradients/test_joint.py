"""Joint gradients: several models of one form in one vectorized pass equal each model's own gradients (float32
sums in another order: within 1e-4 relative, 1e-6 absolute)."""
import pytest
import torch

import l3d
from l3d.experiments.toys import circuit_superposition
from l3d.gradients.joint import JointPool, joinable


def collectors(n=3):
    torch.manual_seed(0)
    return [l3d.GradientCollector(circuit_superposition(6, 3, "authors"), "*", engine="dense") for _ in range(n)]


def test_one_pass_over_several_models_equals_each_models_own_gradients():
    cols = collectors()
    inputs = [torch.rand(20, 6, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    references = [c.references(x, torch.Generator().manual_seed(9)) for c, x in zip(cols, inputs)]
    pool = JointPool(cols)
    pending = [pool.request(c, x, r) for c, x, r in zip(cols, inputs, references)]
    assert [p.n_samples for p in pending] == [20] * 3 and pending[1][4:9].n_samples == 5
    for c, x, r, p in zip(cols, inputs, references, pending):
        own = c(x, r)
        torch.testing.assert_close(p.flat(), own.flat(), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(p[4:9].flat(), own.flat()[4:9], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(p[4:9][1:3].sq_norms(), own.sq_norms()[5:7], rtol=1e-4, atol=1e-6)


def test_only_models_of_one_form_with_dense_gradients_share_a_pass():
    cols = collectors(2)
    assert joinable(cols)
    assert not joinable(cols[:1])
    torch.manual_seed(1)
    other = l3d.GradientCollector(circuit_superposition(6, 4, "authors"), "*", engine="dense")    # other shapes
    factored = l3d.GradientCollector(circuit_superposition(6, 3, "authors"), "*", engine="auto")
    assert not joinable([cols[0], other]) and not joinable([cols[0], factored])
    with pytest.raises(ValueError, match="cannot share a pass"):
        JointPool([cols[0], other])
